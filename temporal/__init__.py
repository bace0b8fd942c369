"""Time travel for ordinary SQL tables.

Add :class:`Temporal` to a SQLAlchemy model and every insert, update and delete
becomes a version with ``created_at`` / ``expired_at``; read any moment with
:func:`as_of`, list versions with :func:`history` and :func:`versions`.
"""

from __future__ import annotations

from temporal import bulk as _bulk  # noqa: F401  (registers the statement rewriting)
from temporal import catalog as _catalog  # noqa: F401  (registers tables on CREATE)
from temporal import conflicts as _conflicts  # noqa: F401  (lost races -> ConflictError)
from temporal import hooks as _hooks
from temporal import references as _references  # noqa: F401  (foreign keys to temporal tables)
from temporal import unitofwork as _unitofwork  # noqa: F401  (registers the ORM events)
from temporal._version import VERSION
from temporal.archival import ArchivedError, ArchiverBusyError, ArchiveSummary, archive
from temporal.association import association_table
from temporal.changes import Change, changes, iter_changes
from temporal.errors import (
    ConflictError,
    ExportError,
    InvalidTimeError,
    ReadOnlyError,
    TemporalError,
    UnsupportedError,
)
from temporal.export import export
from temporal.manifest import Manifest, ManifestError
from temporal.model import Temporal
from temporal.query import as_of, history, period_predicate, valid_at, versions
from temporal.types import UTCDateTime
from temporal.verification import VerifyReport, load, verify
from temporal.versioning import transaction_time

__version__ = VERSION

# The Alembic operations (``op.make_temporal`` ...) are registered as soon as
# Alembic's operations module is imported, which Alembic does before it runs any
# migration environment: a process that never migrates never imports Alembic.
_hooks.after_import("alembic.operations", lambda: _hooks.load("temporal.migration"))

__all__ = [
    "ArchiveSummary",
    "ArchivedError",
    "ArchiverBusyError",
    "Change",
    "ConflictError",
    "ExportError",
    "InvalidTimeError",
    "Manifest",
    "ManifestError",
    "ReadOnlyError",
    "Temporal",
    "TemporalError",
    "UTCDateTime",
    "UnsupportedError",
    "VerifyReport",
    "__version__",
    "archive",
    "as_of",
    "association_table",
    "changes",
    "export",
    "history",
    "iter_changes",
    "load",
    "period_predicate",
    "transaction_time",
    "valid_at",
    "verify",
    "versions",
]
