"""The ``temporal`` command: a thin typer layer over the library.

Each command parses its arguments, calls one library function and renders
the result. Every :class:`~temporal.TemporalError` (and a database that
cannot be reached) becomes one line on stderr and a non-zero exit, never a
traceback; passwords in URLs are never printed.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, NoReturn

import typer

from temporal._version import VERSION
from temporal.errors import TemporalError

DEFAULT_URL = "sqlite:///temporal.db"
URL_ENV = "TEMPORAL_DATABASE_URL"

app = typer.Typer(
    name="temporal",
    help="Time travel for ordinary SQL tables: versioned rows, as-of reads, "
    "reproducible exports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help=f"Database URL (default: ${URL_ENV}, else {DEFAULT_URL}).",
                 show_default=False),
]


def database_url(url: str | None) -> str:
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def _version(value: bool) -> None:
    if value:
        typer.echo(f"temporal {VERSION}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Time travel for ordinary SQL tables."""


@app.command("version")
def version_command() -> None:
    """Show the library, SQLAlchemy and Python versions."""
    import sqlalchemy

    typer.echo(f"temporal {VERSION} (SQLAlchemy {sqlalchemy.__version__}, "
               f"Python {sys.version.split()[0]})")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"temporal: error: {message}", err=True)
    raise typer.Exit(code)


def main() -> None:
    """Console entry point: user errors become one line and an exit code."""
    try:
        app()
    except TemporalError as error:
        fail(str(error))
