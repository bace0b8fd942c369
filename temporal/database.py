"""Opening a database for the tools: a URL or an Engine in, clear errors out.

The command line and the library's jobs (export, verify, archive) accept a
database URL or an Engine. A malformed URL, a missing driver or a server that
cannot be reached become one :class:`~temporal.TemporalError` whose message
shows the URL with its password masked, never the password.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, make_url

from temporal.errors import TemporalError


class DatabaseError(TemporalError):
    """The database URL is unusable or the database cannot be reached."""


def safe_url(url: str) -> str:
    """The URL for messages, with everything that could be a password masked.

    Not the URL parser's reading: a password with an unencoded ``@`` or ``/``
    would be split in the wrong place and part of it shown as the host. Here
    everything between the user name's ``:`` and the *last* ``@`` before the
    query string is masked, and so is a ``password=`` query parameter.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<unparsable URL>"
    if "@" in rest:  # a password may hold '/', '?' or '#' too: the last '@' ends it
        userinfo, _, rest = rest.rpartition("@")
        user = userinfo.split(":", 1)[0]
        rest = (f"{user}:***@" if ":" in userinfo else f"{user}@") + rest
    rest = re.sub(r"(?i)([?&])(password|passwd|pwd|sslpassword)=[^&]*", r"\1\2=***", rest)
    return f"{scheme}://{rest}"


def _secrets(url: str) -> list[str]:
    """Every string in ``url`` that may be (part of) its password, longest first."""
    userinfo = url.partition("://")[2].rpartition("@")[0]
    found = {userinfo.split(":", 1)[1]} if ":" in userinfo else set()
    # A parser that split the password at an '@', ':' or '/' may quote its pieces.
    found |= {piece for piece in re.split(r"[@/:]", userinfo.partition(":")[2])
              if len(piece) >= 4}
    found |= set(re.findall(r"(?i)(?:password|passwd|pwd|sslpassword)=([^&]*)", url))
    return sorted((s for s in found if s), key=len, reverse=True)


def hide_secrets(message: str, url: str) -> str:
    """``message`` with every piece of ``url``'s password replaced by ``***``."""
    for secret in _secrets(url):
        message = message.replace(secret, "***")
    return message


def _readable_settings(dbapi_connection: Any, _record: Any) -> None:
    """The tools' own PostgreSQL sessions: the styles the driver parses timestamps and
    intervals in, whatever a role, database or PGOPTIONS set (exports pin their own)."""
    dbapi_connection.execute("SET DateStyle TO 'ISO, YMD'")
    dbapi_connection.execute("SET IntervalStyle TO postgres")
    dbapi_connection.commit()


@contextmanager
def engine_for(source: str | Engine) -> Iterator[Engine]:
    """Yield an Engine for ``source``, disposing of it afterwards if it was made here."""
    if isinstance(source, Engine):
        yield source
        return
    if source.partition("://")[2].count("@") > 1:
        raise DatabaseError(f"cannot use database URL {safe_url(source)}: it has more than one "
                            "'@' before the host; write an '@' in the password as %40")
    try:
        url = make_url(source)
        # The tools' own engine: a connection for every job of a parallel export
        # (SQLAlchemy's default pool stops at 15), each closed when it comes back.
        pooling = {"max_overflow": -1} if url.get_backend_name() == "postgresql" else {}
        engine = create_engine(url, **pooling)
        if engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _readable_settings)
    except ValueError as error:  # e.g. a port that is not a number
        reason = hide_secrets(str(error), source)
        if "invalid literal for int()" in reason:
            reason = "its port is not a number"
        raise DatabaseError(f"cannot use database URL {safe_url(source)}: {reason}") from None
    except exc.NoSuchModuleError:
        raise DatabaseError(f"cannot use database URL {safe_url(source)}: unknown database "
                            "kind (use postgresql+psycopg://... or sqlite:///FILE)") from None
    except exc.ArgumentError as error:
        raise DatabaseError(f"cannot use database URL {safe_url(source)}: "
                            f"{hide_secrets(str(error), source)}") from None
    except ImportError as error:
        raise DatabaseError(f"the driver for {safe_url(source)} is not installed ({error.name})"
                            ) from None
    try:
        try:
            with engine.connect():
                pass
        except exc.OperationalError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else "unreachable"
            reason = hide_secrets(reason, source)
            if engine.url.password:
                reason = reason.replace(str(engine.url.password), "***")
            raise DatabaseError(f"cannot connect to {safe_url(source)}: {reason}") from None
        yield engine
    finally:
        engine.dispose()
