"""Session and engine listeners that wait for the first temporal table.

Importing ``temporal`` must cost plain models nothing. A ``do_orm_execute``
listener runs for every ORM statement and a ``before_flush`` listener for every
flush, whether or not a temporal model exists; the identity-lookup wrappers of
``_compat.py`` sit in every ``Session.get``. So the modules declare them here
with :func:`on` and :func:`when_installed`, and they are registered only when
the first temporal table is defined (:func:`install`, called by the
:class:`~temporal.Temporal` mixin and by the Alembic operation that makes a
table temporal). A process with no temporal model never has them; in one with
temporal models, plain models pay the few microseconds per statement the
listeners take to see a statement is not theirs (``reach.py`` answers that
once per statement shape). No engine gets connection listeners at all: they
would switch every connection, plain models' included, to SQLAlchemy's
event-dispatching path for every statement; the savepoint and commit listeners
``versioning.py`` needs are added to each connection that writes versions.

Mapper events on the mixin (``unitofwork.py``) fire only for temporal models,
the ``handle_error`` listener (``conflicts.py``) only for a failed statement,
and the DDL listeners (``catalog.py``) only for CREATE/DROP, so those are
registered on import as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import event

F = TypeVar("F", bound=Callable[..., Any])

_pending: list[Callable[[], None]] = []
_installed = False


def on(target: Any, identifier: str, **kw: Any) -> Callable[[F], F]:
    """``event.listens_for``, deferred until :func:`install`."""

    def decorate(fn: F) -> F:
        when_installed(lambda: event.listen(target, identifier, fn, **kw))
        return fn

    return decorate


def when_installed(action: Callable[[], None]) -> None:
    """Run ``action`` when the first temporal table is defined (now, if it was)."""
    if _installed:
        action()
    else:
        _pending.append(action)


def install() -> None:
    """Register everything declared so far, once (idempotent and cheap)."""
    global _installed
    if _installed:
        return
    _installed = True
    for action in _pending:
        action()
    _pending.clear()


def installed() -> bool:
    return _installed
