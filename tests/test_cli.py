"""The command line: every command against a real database, and how errors are reported."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, text
from sqlalchemy.orm import Session

import temporal
from temporal import transaction_time
from temporal.clock import isoformat
from tests.models import Base, Customer


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "temporal", *args], capture_output=True,
                          text=True, check=False, timeout=120, env=env)


@pytest.fixture
def populated(url: URL) -> tuple[str, str]:
    """A database URL with some history, and a moment inside it."""
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([Customer(id=1, name="Ada"), Customer(id=2, name="Bob")])
    with Session(engine) as s, s.begin():
        s.get(Customer, 1).tier = "gold"
        moment = transaction_time(s)
    engine.dispose()
    return url.render_as_string(hide_password=False), isoformat(moment)


def test_version_and_help() -> None:
    assert cli("--version").stdout.strip() == f"temporal {temporal.__version__}"
    result = cli("--help")
    assert result.returncode == 0
    for command in ("export", "verify", "history"):
        assert command in result.stdout


def test_export_verify_and_history(populated: tuple[str, str], tmp_path: Path) -> None:
    url, moment = populated
    done = cli("export", "--as-of", moment, "--table", "customers", "--out",
               str(tmp_path / "out"), "--url", url)
    assert done.returncode == 0, done.stderr
    assert "exported 2 rows" in done.stdout and done.stderr == ""  # quiet in pipes
    ok = cli("verify", str(tmp_path / "out" / "manifest.json"), "--url", url)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 1 files, 2 rows")
    history = cli("history", "--table", "customers", "--key", "1", "--url", url)
    assert history.returncode == 0 and "basic" in history.stdout and "gold" in history.stdout

    part = tmp_path / "out" / "customers" / "part-00000.csv"
    part.write_text(part.read_text().replace("Bob", "Rob"))
    bad = cli("verify", str(tmp_path / "out"))
    assert bad.returncode == 1 and "sha256 differs" in bad.stderr


def test_environment_variable_supplies_the_url(populated: tuple[str, str], tmp_path: Path
                                               ) -> None:
    url, moment = populated
    import os

    env = {**os.environ, "TEMPORAL_DATABASE_URL": url}
    done = cli("export", "--as-of", moment, "--table", "customers", "--out",
               str(tmp_path / "e"), "--format", "jsonl", env=env)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["format"] == "jsonl" and url not in json.dumps(manifest)


@pytest.mark.parametrize("args, message", [
    (["export", "--as-of", "last tuesday", "--table", "customers"], "cannot read 'last tuesday'"),
    (["export", "--as-of", "2999-01-01", "--table", "customers"], "in the future"),
    (["export", "--as-of", "2026-01-01", "--table", "nope"], "no table named 'nope'"),
    (["export", "--as-of", "2026-01-01", "--table", "x; DROP TABLE customers"], "no table named"),
    (["export", "--as-of", "2026-01-01", "--table", "customers", "--wait", "soon"],
     "cannot read 'soon' as a duration"),
    (["history", "--table", "customers", "--key", "abc"], "not a valid id"),
    (["verify", "nowhere/manifest.json"], "no manifest at"),
])
def test_bad_input_gets_one_clear_line_and_changes_nothing(
    populated: tuple[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    url, _ = populated
    out = ["--out", str(tmp_path / "out")] if args[0] == "export" else []
    done = cli(*args, *out, "--url", url) if args[0] != "verify" else cli(*args)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar_one() == 3
    engine.dispose()


def test_a_wrong_url_never_shows_the_password(tmp_path: Path) -> None:
    done = cli("export", "--as-of", "2026-01-01", "--table", "t", "--out", str(tmp_path / "o"),
               "--url", "postgresql+psycopg://user:hunter2@127.0.0.1:1/nothing")
    assert done.returncode == 1 and "hunter2" not in done.stderr + done.stdout
    assert "cannot connect to postgresql+psycopg://user:***@127.0.0.1:1/nothing" in done.stderr
    garbled = cli("export", "--as-of", "2026-01-01", "--table", "t", "--out", str(tmp_path / "o"),
                  "--url", "not a url :hunter2")
    assert garbled.returncode == 1 and "hunter2" not in garbled.stderr
    assert not (tmp_path / "o").exists()


def test_an_export_needs_tables_or_a_query(tmp_path: Path) -> None:
    done = cli("export", "--as-of", "2026-01-01", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "--table" in done.stderr


def test_past_moment_inside_the_history(populated: tuple[str, str], tmp_path: Path) -> None:
    url, moment = populated
    from temporal.clock import parse_time

    before = isoformat(parse_time(moment) - timedelta(microseconds=1))
    cli("export", "--as-of", before, "--table", "customers", "--out", str(tmp_path / "b"),
        "--url", url)
    assert '"gold"' not in (tmp_path / "b" / "customers" / "part-00000.csv").read_text()


def test_query_export_from_the_command_line(populated: tuple[str, str], tmp_path: Path) -> None:
    url, moment = populated
    done = cli("export", "--as-of", moment, "--query",
               "SELECT tier, count(*) AS n FROM customers GROUP BY tier", "--name", "tiers",
               "--format", "jsonl", "--out", str(tmp_path / "q"), "--url", url)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "q" / "tiers" / "part-00000.jsonl").read_text().splitlines()
    # Types come from SQL, never from the data: PostgreSQL says count(*) is a bigint;
    # SQLite gives an expression no type, so it is canonical text.
    n = 1 if url.startswith("postgresql") else "1"
    assert [json.loads(line) for line in lines] == [{"tier": "basic", "n": n},
                                                    {"tier": "gold", "n": n}]
    refused = cli("export", "--as-of", moment, "--query", "DELETE FROM customers",
                  "--out", str(tmp_path / "d"), "--url", url)
    assert refused.returncode == 1 and "the query failed" in refused.stderr
