"""Which database errors are a concurrent loser's, raised as :class:`~temporal.ConflictError`.

A retry loop written against ``ConflictError`` must catch every way a
temporal transaction can lose a race, whichever statement lost it: temporal's
own expire and insert statements, the ORM's INSERTs of new versions, bulk
``insert()``, or the COMMIT itself. One ``handle_error`` listener sees them
all and replaces, chained to the driver's error (``__cause__``):

in a statement on a temporal table, or in any statement of a transaction
that has written temporal versions (the whole transaction is then what to
retry):

* a deadlock (``40P01``) or a serialization failure (``40001``);
* a violation of a table's no-overlap guard (``23P01`` on
  ``<table>_no_overlap``, see ``guard.py``): a transaction with an older stamp
  tried to write a version overlapping one that a younger transaction
  committed meanwhile, typically re-inserting a key the younger one deleted.
  The versioning triggers (``triggers.py``) raise the same error when a raw
  statement would change a version younger than its stamp; that one is a
  conflict whatever the statement (raw SQL through a session included).

Anything else passes through untouched: plain tables' errors, and raw SQL
outside a versioning transaction (whose overlap is an ``IntegrityError``, as
any constraint's). The
listener only runs when a statement has already failed, so it costs a plain
model nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext

from temporal import guard, triggers
from temporal.errors import ConflictError
from temporal.model import is_temporal_table
from temporal.versioning import wrote_versions

_RETRYABLE = {"40001": "a serialization failure", "40P01": "a deadlock"}
_EXCLUSION = "23P01"


@event.listens_for(Engine, "handle_error")
def _as_conflict(context: ExceptionContext) -> BaseException | None:
    orig: Any = context.original_exception
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate not in _RETRYABLE and sqlstate != _EXCLUSION:
        return None
    if not (_on_temporal_table(context) or _from_triggers(orig) or (
            context.connection is not None and wrote_versions(context.connection))):
        return None  # a plain table's, or raw SQL outside a versioning transaction
    if sqlstate in _RETRYABLE:
        return ConflictError(
            f"this transaction lost a race with a concurrent one ({_RETRYABLE[sqlstate]}: "
            f"{_first_line(orig)}); roll back and retry"
        )
    if sqlstate == _EXCLUSION:
        name = getattr(getattr(orig, "diag", None), "constraint_name", None) or ""
        if name.endswith(guard.NO_OVERLAP):
            table = name[: -len(guard.NO_OVERLAP)]
            detail = getattr(getattr(orig, "diag", None), "message_detail", None) or ""
            return ConflictError(
                f"cannot write {table}: a concurrent transaction with a younger timestamp "
                "already committed a version of this key for the same period (for example, "
                f"it deleted the key this transaction re-inserts); {detail} "
                "Roll back and retry".replace("  ", " ")
            )
    return None


def _from_triggers(error: Any) -> bool:
    """The versioning triggers' refusal of an older stamp (``triggers.py``), whatever the
    statement: it names the table's guard, on that very table."""
    diag = getattr(error, "diag", None)
    name, table = getattr(diag, "constraint_name", None), getattr(diag, "table_name", None)
    message = getattr(diag, "message_primary", None) or ""
    return bool(name and table and name == table + guard.NO_OVERLAP
                and message.startswith(triggers.MESSAGE))


def _on_temporal_table(context: ExceptionContext) -> bool:
    compiled: Any = getattr(context.execution_context, "compiled", None)
    statement = getattr(compiled, "statement", None)
    return is_temporal_table(getattr(statement, "table", None))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
