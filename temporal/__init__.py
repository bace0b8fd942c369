"""Time travel for ordinary SQL tables.

Add :class:`Temporal` to a SQLAlchemy model and every insert, update and delete
becomes a version with ``created_at`` / ``expired_at``; read any moment with
:func:`as_of`, list versions with :func:`history` and :func:`versions`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from temporal import bulk as _bulk  # noqa: F401  (registers the statement rewriting)
from temporal.errors import (
    ConflictError,
    InvalidTimeError,
    ReadOnlyError,
    TemporalError,
    UnsupportedError,
)
from temporal.model import Temporal
from temporal.query import as_of, history, period_predicate, valid_at, versions
from temporal.types import UTCDateTime
from temporal.versioning import transaction_time

try:
    __version__ = version("temporal")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ConflictError",
    "InvalidTimeError",
    "ReadOnlyError",
    "Temporal",
    "TemporalError",
    "UTCDateTime",
    "UnsupportedError",
    "__version__",
    "as_of",
    "history",
    "period_predicate",
    "transaction_time",
    "valid_at",
    "versions",
]
