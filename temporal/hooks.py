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

The same goes for modules: :func:`after_import` registers the Alembic operations
when Alembic is imported, so ``import temporal`` does not import Alembic.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from collections.abc import Callable
from types import ModuleType
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


def after_import(name: str, action: Callable[[], None]) -> None:
    """Run ``action`` once module ``name`` has been imported (now, if it has).

    How ``import temporal`` registers its Alembic operations without importing
    Alembic (and Mako, and Pygments) into every process that uses the library:
    Alembic imports ``alembic.operations`` before it runs a migration
    environment, so the operations are there for every migration script, while
    a process that never migrates keeps a heap ~20,000 objects smaller, which
    every full garbage collection of a plain model's workload would walk.
    """
    if name in sys.modules:
        action()
        return
    sys.meta_path.insert(0, _AfterImport(name, action))


def load(name: str) -> None:
    """Import module ``name`` for its side effects (an :func:`after_import` action)."""
    importlib.import_module(name)


class _AfterImport(importlib.abc.MetaPathFinder):
    """A finder that asks the others for one module and wraps its loader (the
    post-import hook pattern of PEP 369, done with the public import machinery).

    It stays in place until the module has really been executed: a lookup that
    finds the module without executing it must not use the hook up."""

    def __init__(self, name: str, action: Callable[[], None]) -> None:
        self.name = name
        self.action = action

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenAct(spec.loader, self.done)
                return spec
        return None

    def done(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
            self.action()


class _ThenAct(importlib.abc.Loader):
    def __init__(self, loader: Any, action: Callable[[], None]) -> None:
        self._loader = loader
        self._action = action

    def create_module(self, spec: Any) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._action()

    def __getattr__(self, name: str) -> Any:  # get_source, resource readers, ...
        return getattr(self._loader, name)
