"""The examples in examples/ run as written and check themselves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import URL

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quickstart_on_sqlite() -> None:
    assert "quickstart: ok" in run("quickstart.py")


@pytest.mark.postgres
def test_quickstart_on_postgresql(pg_url: URL) -> None:
    assert "quickstart: ok" in run("quickstart.py", pg_url.render_as_string(hide_password=False))


def test_demo_on_sqlite(tmp_path: Path) -> None:
    out = run("demo.py", f"sqlite:///{tmp_path / 'demo.db'}")
    assert "byte-identical" in out and "demo: ok" in out



def test_adopting_an_existing_table_on_sqlite() -> None:
    assert "adopt: ok" in run("adopt/run.py")


@pytest.mark.postgres
def test_adopting_an_existing_table_on_postgresql(pg_url: URL) -> None:
    assert "adopt: ok" in run("adopt/run.py", pg_url.render_as_string(hide_password=False))


def test_training_set_on_sqlite() -> None:
    assert "training_set: ok" in run("training_set.py")


@pytest.mark.postgres
def test_training_set_on_postgresql(pg_url: URL) -> None:
    out = run("training_set.py", pg_url.render_as_string(hide_password=False))
    assert "training_set: ok" in out
