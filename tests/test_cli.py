"""The command line: every command against a real database, and how errors are reported."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, create_engine, insert, inspect, text
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
    return _populate(url)


@pytest.fixture
def populated_sqlite(sqlite_url: URL) -> tuple[str, str]:
    """The same on SQLite only: for input the command line refuses before any backend."""
    return _populate(sqlite_url)


def _populate(url: URL) -> tuple[str, str]:
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


@pytest.mark.postgres
def test_a_clients_date_and_interval_styles_change_nothing(pg_url: URL, tmp_path: Path) -> None:
    """DateStyle SQL, IntervalStyle sql_standard and a local time zone (set by PGOPTIONS,
    a role or a database): the tools still read times, and export the same bytes. (The
    driver itself parses timestamps only under DateStyle ISO, so a session that keeps
    another cannot load any timestamptz column, temporal or not.)"""
    url, moment = _populate(pg_url)
    plain = cli("export", "--as-of", moment, "--table", "customers", "--out",
                str(tmp_path / "plain"), "--url", url)
    assert plain.returncode == 0, plain.stderr
    import os

    styled = {**os.environ, "PGOPTIONS": "-c DateStyle=SQL,DMY -c IntervalStyle=sql_standard "
              "-c TimeZone=America/New_York", "COLUMNS": "400"}
    done = cli("export", "--as-of", moment, "--table", "customers", "--out",
               str(tmp_path / "styled"), "--url", url, env=styled)
    assert done.returncode == 0, done.stderr
    assert ((tmp_path / "styled" / "manifest.json").read_bytes()
            == (tmp_path / "plain" / "manifest.json").read_bytes())
    ok = cli("verify", str(tmp_path / "styled"), "--url", url, env=styled)
    assert ok.returncode == 0, ok.stderr
    history = cli("history", "--table", "customers", "--key", "1", "--url", url, env=styled)
    assert history.returncode == 0 and "gold" in history.stdout, history.stderr
    assert "+00:00" in history.stdout  # shown in UTC, not New York time

    # A library caller's own engine in those styles: the stamps and the export still work.
    engine = create_engine(pg_url, connect_args={"options": styled["PGOPTIONS"]})
    try:
        with Session(engine) as s, s.begin():
            s.execute(insert(Customer), [{"id": 3, "name": "Cy"}])
            stamp = transaction_time(s)
        assert stamp.tzinfo is not None and stamp > datetime.fromisoformat(moment)
        manifest = temporal.export(engine, tmp_path / "library",
                                   as_of=datetime.fromisoformat(moment), tables=["customers"])
        assert (manifest.content_digest
                == json.loads((tmp_path / "plain" / "manifest.json").read_text())["content_digest"])
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("jobs", ["1", "3"])
def test_a_statement_timeout_during_copy_is_one_line(
        pg_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], jobs: str) -> None:
    """A role's or database's statement_timeout cutting an export's COPY short is a
    database error like any other: one line, no traceback (the COPY is the driver's own)."""
    from tests.test_parallel import big_customers

    engine = create_engine(pg_url)
    try:
        moment = isoformat(big_customers(engine))
        with engine.begin() as conn:
            conn.execute(text(f'ALTER DATABASE "{pg_url.database}" '
                              "SET statement_timeout = '100ms'"))
    finally:
        engine.dispose()
    code, _, err = run_main(monkeypatch, capsys, "export", "--as-of", moment, "--table",
                            "customers", "--table", "lines", "--jobs", jobs, "--out",
                            str(tmp_path / "x"), "--url", pg_url.render_as_string(False))
    assert code == 1
    assert err.strip().splitlines() == ["temporal: error: database error: canceling statement "
                                        "due to statement timeout"]
    assert not (tmp_path / "x").exists()


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
    assert refused.returncode == 1 and "must be a SELECT, not DELETE" in refused.stderr


# -- every command, every kind of bad input ---------------------------------------------


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
             *args: str) -> tuple[int, str, str]:
    """The real entry point, in-process: an uncaught exception fails the test."""
    from temporal.cli import main

    monkeypatch.setattr(sys, "argv", ["temporal", *args])
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = int(stop.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def db_state(url: str) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        names = sorted(inspect(conn).get_table_names())
        state = [f"{n}: {sorted(map(repr, conn.exec_driver_sql(f'SELECT * FROM {n}')))}"
                 for n in names]
    engine.dispose()
    return state


BAD_INPUT = [
    ["export", "--as-of", "yesterday-ish", "--table", "customers", "--out", "{out}"],
    ["export", "--as-of", "0001-01-01T00:00:00+01:00", "--table", "customers", "--out", "{out}"],
    ["export", "--as-of", "99999-01-01", "--table", "customers", "--out", "{out}"],
    ["export", "--as-of", "{moment}", "--table", "customers", "--out", "{out}",
     "--wait", "99999999999d"],
    ["export", "--as-of", "{moment}", "--table", "customers", "--out", "{file}/out"],
    ["export", "--as-of", "{moment}", "--table", "customers", "--out", "/proc/temporal-out"],
    ["export", "--as-of", "{moment}", "--table", "customers", "--out", "{file}"],
    ["export", "--as-of", "{moment}", "--query", "SELECT 1; DELETE FROM customers",
     "--out", "{out}"],
    ["export", "--as-of", "{moment}", "--query", "SELECT * FROM regions", "--out", "{out}"],
    ["export", "--as-of", "{moment}", "--table", "customers", "--out", "{out}",
     "--signing-key-file", "{nowhere}"],
    ["export", "--as-of", "{moment}", "--table", "customers", "--out", "{out}",
     "--signing-key-file", "{short}"],
    ["export", "--as-of", "{moment}", "--table", "customers", "--out", "{out}",
     "--url", "postgresql+psycopg://u@127.0.0.1:notaport/db"],
    ["export", "--as-of", "{moment}", "--table", "customers", "--out", "{out}",
     "--url", "nonsense://x"],
    ["verify", "{nowhere}"],
    ["verify", "{file}"],
    ["verify", "{tmp}"],
    ["verify", "{nowhere}", "--key-file", "{nowhere}"],
    ["history", "--table", "customers", "--key", "abc"],
    ["history", "--table", "nope", "--key", "1"],
    ["history", "--table", "customers", "--key", "1", "--key", "2"],
    ["db", "upgrade", "nonsense"],
    ["db", "downgrade", "nonsense"],
    ["db", "status", "--url", "postgresql://u@h:notaport/db"],
    ["ttl", "customers", "99999999999d"],
    ["ttl", "customers", "90x"],
    ["ttl", "nope", "1d"],
    ["archive", "--ttl", "99999999999d"],
    ["archive", "--ttl", "soon"],
    ["archive", "--every", "0s"],
    ["archive", "--every", "365000d"],
    ["archive", "--table", "nope"],
]


@pytest.mark.parametrize("args", BAD_INPUT, ids=lambda a: " ".join(a[:4]))
def test_every_command_meets_bad_input_with_one_line_and_changes_nothing(
    populated_sqlite: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    url, moment = populated_sqlite
    (tmp_path / "file").write_text("not a folder, not a key")
    (tmp_path / "short").write_text("abc\n")
    fill = {"short": str(tmp_path / "short"), "out": str(tmp_path / "out"),
            "file": str(tmp_path / "file"), "nowhere": str(tmp_path / "nowhere"),
            "moment": moment, "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in args]
    if "--url" not in argv and argv[0] != "verify":
        argv += ["--url", url]
    before = db_state(url)
    code, out, err = run_main(monkeypatch, capsys, *argv)
    assert code in (1, 2), (code, out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("temporal: error: ")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    assert (tmp_path / "file").read_text() == "not a folder, not a key"
    assert db_state(url) == before


def test_the_first_year_exports_and_verifies(populated: tuple[str, str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = populated
    code, out, err = run_main(monkeypatch, capsys, "export", "--as-of", "0001-01-01",
                              "--table", "customers", "--out", str(tmp_path / "o"), "--url", url)
    assert code == 0, err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["as_of"] == "0001-01-01T00:00:00.000000Z"
    code, out, err = run_main(monkeypatch, capsys, "verify", str(tmp_path / "o"), "--url", url)
    assert code == 0 and out.startswith("ok: 1 files, 0 rows"), err


@pytest.mark.parametrize("password", ["p@ss3cretPW", "pa:ss/wo#rd?x", "s3cret%40pct"])
def test_a_password_is_never_shown_whatever_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    password: str
) -> None:
    from urllib.parse import quote

    for written in (password, quote(password, safe="")):
        url = f"postgresql+psycopg://postgres:{written}@127.0.0.1:1/nothing"
        for args in (["db", "status"], ["export", "--as-of", "2026-01-01", "--table", "t",
                                        "--out", str(tmp_path / "o")]):
            code, out, err = run_main(monkeypatch, capsys, *args, "--url", url)
            assert code == 1 and "Traceback" not in err
            for piece in {password, written, *password.replace(":", "@").split("@")}:
                if len(piece) >= 4:
                    assert piece not in out + err, (piece, err)
    assert not (tmp_path / "o").exists()


def test_every_command_and_option_has_help_and_is_in_the_readme() -> None:
    import typer.main
    from typer.core import TyperOption

    from temporal.cli import app

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `temporal ")]

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        assert (command.help or "").strip(), f"{path} has no help"
        assert "Example: temporal " + " ".join(path[1:]) in (command.epilog or ""), path
        row = [r for r in rows if r.startswith(f"| `{' '.join(path)}")]
        assert row, f"README has no row for {' '.join(path)}"
        for param in command.params:
            if param.name == "help":
                continue
            assert (getattr(param, "help", None) or "").strip(), f"{path} {param.name}: no help"
            for opt in param.opts if isinstance(param, TyperOption) else []:
                assert opt in row[0], f"README row for {' '.join(path)} lacks {opt}"

    walk(typer.main.get_command(app), ["temporal"])


def test_progress_shows_total_percent_and_rate_on_a_terminal(
    populated: tuple[str, str], tmp_path: Path
) -> None:
    import os
    import pty

    url, moment = populated
    leader, follower = pty.openpty()
    done = subprocess.run([sys.executable, "-m", "temporal", "export", "--as-of", moment,
                           "--table", "customers", "--out", str(tmp_path / "p"), "--url", url],
                          stdout=subprocess.PIPE, stderr=follower, timeout=120, check=False,
                          env={**os.environ, "COLUMNS": "160", "TERM": "xterm"})
    os.close(follower)
    shown = b""
    try:
        while chunk := os.read(leader, 65536):
            shown += chunk
    except OSError:
        pass
    os.close(leader)
    text_shown = shown.decode(errors="replace")
    assert done.returncode == 0
    assert "2/2" in text_shown and "100%" in text_shown and "rows/s" in text_shown, text_shown


def test_unversioned_and_signatures_from_the_command_line(
    populated_sqlite: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    url, moment = populated_sqlite
    key = tmp_path / "key"
    key.write_text("a long shared secret, 32 bytes!!\n")
    query = "SELECT c.name, r.name AS region FROM customers c LEFT JOIN regions r ON 1 = 0"
    out = str(tmp_path / "q")
    code, _, err = run_main(monkeypatch, capsys, "export", "--as-of", moment, "--query", query,
                            "--out", out, "--url", url)
    assert code == 1 and "--unversioned regions" in err
    code, _, err = run_main(monkeypatch, capsys, "export", "--as-of", moment, "--query", query,
                            "--unversioned", "regions", "--signing-key-file", str(key),
                            "--out", out, "--url", url)
    assert code == 0, err
    assert json.loads((tmp_path / "q" / "manifest.json").read_text())["unversioned"] == [
        "regions"]
    code, shown, err = run_main(monkeypatch, capsys, "verify", out, "--key-file", str(key))
    assert code == 0 and "signature valid" in shown, err
    (tmp_path / "other").write_text("a different secret of 32 bytes!!")
    code, _, err = run_main(monkeypatch, capsys, "verify", out, "--key-file",
                            str(tmp_path / "other"))
    assert code == 1 and "mismatch: signature: the manifest was not signed with this key" in err
