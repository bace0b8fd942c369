"""Writing several tables of one export at once, all read from one snapshot.

PostgreSQL lets a transaction hand its snapshot to others
(``pg_export_snapshot()``; ``SET TRANSACTION SNAPSHOT`` in each of them): every
worker connection then sees exactly what the export's own transaction sees,
so tables written side by side are as consistent as tables written one after
the other, and the files are the same bytes. The server sorts and renders each
table in its own backend, so a server with more cores exports faster.

Work is handed out biggest table first, so the last table to start is a
small one. The first failure stops the rest: the queries still running are
cancelled, and the error is raised once every worker has stopped.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection, text

from temporal.errors import ExportError

T = TypeVar("T")
R = TypeVar("R")

_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")


def share_snapshot(conn: Connection) -> str:
    """The id under which other sessions can join ``conn``'s snapshot (PostgreSQL)."""
    snapshot_id = str(conn.execute(text("SELECT pg_export_snapshot()")).scalar_one())
    if not _SNAPSHOT_ID.fullmatch(snapshot_id):  # it is spelled into SQL below
        raise ExportError(f"the server exported an unexpected snapshot id {snapshot_id!r}")
    return snapshot_id


def join_snapshot(conn: Connection, snapshot_id: str) -> Connection:
    """Begin a read-only transaction on ``conn`` that sees snapshot ``snapshot_id``.

    ``SET TRANSACTION SNAPSHOT`` must come before the transaction's first query;
    the caller pins its session settings after this returns.
    """
    if not _SNAPSHOT_ID.fullmatch(snapshot_id):
        raise ExportError(f"not a snapshot id: {snapshot_id!r}")
    conn = conn.execution_options(isolation_level="REPEATABLE READ")
    conn.begin()
    conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")
    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    return conn


def biggest_first(conn: Connection, names: Sequence[str]) -> list[int]:
    """Positions of ``names`` (tables) ordered by their size on disk, largest first."""
    sizes = conn.execute(
        text("SELECT n.i, coalesce(pg_total_relation_size(to_regclass(quote_ident(n.name))), 0)"
             " FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS n(name, i)"),
        {"names": list(names)}).all()
    by_size = {int(i) - 1: int(size) for i, size in sizes}
    return sorted(range(len(names)), key=lambda i: (-by_size.get(i, 0), i))


def run(tasks: Sequence[T], order: Sequence[int], connections: Sequence[Connection],
        work: Callable[[T, Connection], R]) -> list[R]:
    """``work(task, connection)`` for every task, one thread per connection, tasks
    taken in ``order``; the results in the tasks' own order.

    The first exception wins: no further task starts, the others' statements are
    cancelled, and it is raised once every thread has returned. Each connection's
    transaction ends when its thread runs out of tasks.
    """
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in order:
        todo.put(i)
    results: dict[int, R] = {}
    failed = threading.Event()
    first: list[BaseException] = []  # the failure that stopped the rest, not their cancels
    deciding = threading.Lock()
    busy: dict[int, Connection] = {}  # worker -> its connection, while a task runs

    def worker(me: int, conn: Connection) -> None:
        try:
            while not failed.is_set():
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    break
                busy[me] = conn
                try:
                    results[i] = work(tasks[i], conn)
                except BaseException as error:
                    with deciding:
                        if not failed.is_set():
                            first.append(error)
                            failed.set()
                    _cancel_others(busy, me)
                    raise
                finally:
                    busy.pop(me, None)
        finally:
            # Out of work: end the transaction now, not once the last worker is done, so
            # the session never idles in it (idle_in_transaction_session_timeout would
            # end it). After a failure, that failure is the one to report.
            with contextlib.suppress(Exception) if failed.is_set() else contextlib.nullcontext():
                conn.rollback()

    with ThreadPoolExecutor(max_workers=len(connections),
                            thread_name_prefix="temporal-table") as pool:
        futures: list[Future[None]] = [pool.submit(worker, n, c)
                                       for n, c in enumerate(connections)]
        try:
            for future in futures:
                future.exception()  # wait for every worker
            if first:
                raise first[0]
        except BaseException:
            with deciding:
                failed.set()  # e.g. Ctrl-C while waiting: stop the workers too
            _cancel_others(busy, None)
            raise
    return [results[i] for i in range(len(tasks))]


def _cancel_others(busy: dict[int, Connection], me: int | None) -> None:
    for worker, conn in list(busy.items()):
        if worker != me:
            with contextlib.suppress(Exception):  # it may have finished meanwhile
                conn.connection.driver_connection.cancel()  # type: ignore[union-attr]

