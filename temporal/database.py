"""Opening a database for the tools: a URL or an Engine in, clear errors out.

The command line and the library's jobs (export, verify, archive) accept a
database URL or an Engine. A malformed URL, a missing driver or a server that
cannot be reached become one :class:`~temporal.TemporalError` whose message
shows the URL with its password masked, never the password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, exc, make_url

from temporal.errors import TemporalError


class DatabaseError(TemporalError):
    """The database URL is unusable or the database cannot be reached."""


def safe_url(url: str) -> str:
    """The URL for messages: password masked (or a placeholder if unparsable)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparsable URL>"


@contextmanager
def engine_for(source: str | Engine) -> Iterator[Engine]:
    """Yield an Engine for ``source``, disposing of it afterwards if it was made here."""
    if isinstance(source, Engine):
        yield source
        return
    try:
        engine = create_engine(source)
    except (exc.ArgumentError, exc.NoSuchModuleError) as error:
        raise DatabaseError(f"cannot use database URL {safe_url(source)}: "
                            f"{type(error).__name__}") from None
    except ImportError as error:
        raise DatabaseError(f"the driver for {safe_url(source)} is not installed ({error.name})"
                            ) from None
    try:
        try:
            with engine.connect():
                pass
        except exc.OperationalError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else "unreachable"
            if engine.url.password:
                reason = reason.replace(str(engine.url.password), "***")
            raise DatabaseError(f"cannot connect to {safe_url(source)}: {reason}") from None
        yield engine
    finally:
        engine.dispose()
