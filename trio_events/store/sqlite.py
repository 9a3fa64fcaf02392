"""SQLite backend: one writer connection, a small pool of readers, worker threads.

Why threads and this shape: the standard ``sqlite3`` module blocks, so every
call runs in ``trio.to_thread.run_sync``.  SQLite allows one writer at a time,
so writes queue on a :class:`trio.Lock` (fair, FIFO) in front of one dedicated
connection instead of piling up inside SQLite's busy handler; in WAL mode reads
never block the writer, so reads use a pool of ``read_connections``
connections.  Threads are never abandoned on cancellation
(``abandon_on_cancel=False``): a transaction always finishes, committed or
rolled back, before its caller sees the cancellation, so a cancelled request
cannot leave a connection mid-transaction.  Waiting for the writer is bounded
by ``busy_timeout``; past it the caller gets :class:`ServiceUnavailable`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import trio

from ..config import ConfigError, StorageConfig
from ..model import StoredEvent
from . import schema
from .base import Tx
from .dialect import SqliteDb
from .queries import SqlTx
from .threaded import ThreadedStore

__all__ = ["SqliteStore", "apply_migrations", "open_sqlite_store"]

T = TypeVar("T")
log = logging.getLogger("trio_events.store")


def apply_migrations(path: Path) -> list[str]:
    """Bring the SQLite database at ``path`` to the newest schema; return the ids applied."""
    return schema.apply_migrations(f"sqlite:///{path}", "sqlite")


def connect(path: Path, config: StorageConfig) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        isolation_level=None,  # we issue BEGIN / COMMIT ourselves
        check_same_thread=False,  # used from worker threads, one at a time
        timeout=config.busy_timeout,
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if config.durability == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(config.busy_timeout * 1000)}")
    return conn


class SqliteStore(ThreadedStore):
    """The :class:`~trio_events.store.base.Store` for one SQLite file."""

    def __init__(
        self, writer: sqlite3.Connection, readers: list[sqlite3.Connection], busy_timeout: float
    ) -> None:
        super().__init__(len(readers), busy_timeout)
        self._writer = writer
        self._readers = readers  # the read semaphore guarantees one is free
        self._all = [writer, *readers]

    def _run(self, write: bool, fn: Callable[[Tx], T]) -> tuple[T, list[StoredEvent]]:
        if write:
            return self._transaction(self._writer, "BEGIN IMMEDIATE", fn)
        conn = self._readers.pop()
        try:
            return self._transaction(conn, "BEGIN", fn)
        finally:
            self._readers.append(conn)

    @staticmethod
    def _transaction(
        conn: sqlite3.Connection, begin: str, fn: Callable[[Tx], T]
    ) -> tuple[T, list[StoredEvent]]:
        conn.execute(begin)
        tx = SqlTx(SqliteDb(conn))
        try:
            result = fn(tx)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for callback in tx.rollback_callbacks:
                callback()
            raise
        for callback in tx.committed_callbacks:
            callback()
        return result, tx.appended

    def close(self) -> None:
        for conn in self._all:
            conn.close()


@contextlib.asynccontextmanager
async def open_sqlite_store(path: Path, config: StorageConfig) -> AsyncIterator[SqliteStore]:
    """Create or migrate the database at ``path`` and yield a store over it.

    The connections are closed when the block exits, after every call in
    flight has finished (callers live in nurseries inside this block).
    """

    def setup() -> SqliteStore:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            message = f"cannot create the data directory {path.parent}: {exc.strerror}"
            raise ConfigError(message) from None
        try:
            applied = apply_migrations(path)
        except sqlite3.DatabaseError as exc:  # not a database, corrupt, unreadable
            raise ConfigError(f"cannot use the database {path}: {exc}") from None
        if applied:
            log.info("migrations applied path=%s ids=%s", path, ",".join(applied))
        writer = connect(path, config)
        readers = [connect(path, config) for _ in range(config.read_connections)]
        return SqliteStore(writer, readers, config.busy_timeout)

    store = await trio.to_thread.run_sync(setup)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.close)
