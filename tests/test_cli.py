"""The command line: version, help, and how user errors are reported."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

import temporal
from temporal.cli import app

runner = CliRunner()


def test_version_flag() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"temporal {temporal.__version__}"


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "version" in result.stdout


def test_console_script_is_installed() -> None:
    done = subprocess.run([sys.executable, "-m", "temporal", "--version"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "temporal" in done.stdout
