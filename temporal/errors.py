"""The one error root of `temporal`.

Everything the library raises on purpose is a :class:`TemporalError`, so an
application (or the command line) can tell "temporal refused this, here is
why" apart from bugs. Each message says what was wrong and what to do next.
"""

from __future__ import annotations


class TemporalError(Exception):
    """Base class of every error `temporal` raises on purpose."""


class ConflictError(TemporalError):
    """A concurrent transaction changed a version this one wanted to expire.

    Retryable: roll back, re-read and run the transaction again.
    """


class InvalidTimeError(TemporalError, ValueError):
    """A moment or duration that `temporal` cannot use (naive, malformed, in the future)."""


class ReadOnlyError(TemporalError):
    """An object read as of the past was changed; the past cannot be rewritten."""


class UnsupportedError(TemporalError):
    """An operation that would bypass or corrupt versioning."""


class ExportError(TemporalError):
    """An export that cannot be made as asked (unknown table, busy writers, bad output)."""
