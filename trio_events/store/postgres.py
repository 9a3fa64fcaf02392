"""PostgreSQL backend: psycopg 3 in worker threads, one cluster-wide write order.

Why psycopg's synchronous API in threads: it is the maintained PostgreSQL
driver, its pool (:mod:`psycopg_pool`) replaces broken connections by itself,
and its async API is built on asyncio, not Trio.  Running each transaction as
one synchronous function in ``trio.to_thread.run_sync`` is exactly how the
SQLite backend works, so both share the queries (:mod:`.queries`), the
transaction shape and the cancellation rule: a thread is never abandoned, a
transaction always ends (commit or rollback) before its caller sees a
cancellation.

Commit-ordered event ids.  A plain sequence hands out ids in the order
transactions *ask*, not the order they *commit*: with two concurrent writers,
id 8 can become visible before id 7, and a broker that routed 8 would skip 7
for ever.  So every write transaction, in every process, first takes one
advisory lock (``pg_advisory_lock``) and holds it until it has committed and
its after-commit (or after-rollback) callbacks have run.  Writers therefore run
one at a time cluster-wide, exactly like the SQLite backend's single writer:
ids are assigned in commit order, and when a reader sees event N every event
below N is already visible (the lock is released only after the commit).
Ids may have holes (a rolled-back transaction consumes sequence values);
brokers read the log to fill any gap, so a hole costs one query, never an
event.  Reads are not serialized: they run in ``REPEATABLE READ READ ONLY``
snapshots on a pool of connections.  Waiting for the lock is bounded by ``storage.busy_timeout``
(``lock_timeout``); past it the caller gets :class:`ServiceUnavailable`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import trio

from ..config import ConfigError, StorageConfig
from ..errors import ServiceUnavailable
from ..model import StoredEvent
from . import schema
from .base import Tx
from .dialect import PostgresDb
from .queries import SqlTx
from .threaded import ThreadedStore

__all__ = ["WRITE_LOCK", "PostgresStore", "apply_pg_migrations", "open_postgres_store"]

T = TypeVar("T")
log = logging.getLogger("trio_events.store")

# The advisory lock every write transaction holds (an arbitrary 64-bit key:
# "trio_ev" in ASCII).  Anything else writing to this database must take it too.
WRITE_LOCK = 0x7472696F5F6576


def yoyo_url(url: str) -> str:
    """yoyo-migrations names the psycopg 3 driver in the URL scheme."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise ConfigError(
            "storage.url: expected postgresql://[user[:password]@]host[:port]/database"
            f" when storage.backend is 'postgresql', got {url!r}"
        )


def apply_pg_migrations(url: str) -> list[str]:
    """Bring the database at ``url`` to the newest schema (the same migration
    ids as SQLite's, expressed for PostgreSQL); return the ids applied."""
    return schema.apply_migrations(yoyo_url(url), "postgresql")


class PostgresStore(ThreadedStore):
    """The :class:`~trio_events.store.base.Store` over one PostgreSQL database."""

    def __init__(self, pool: Any, read_connections: int, busy_timeout: float) -> None:
        # The inherited write lock queues this process's writers (fair, FIFO),
        # so only one of its threads at a time waits for the cluster-wide lock.
        super().__init__(read_connections, busy_timeout)
        self._pool = pool
        self._begin_write = (
            f"BEGIN; SET LOCAL lock_timeout = {int(busy_timeout * 1000)};"
            f" SELECT pg_advisory_lock({WRITE_LOCK})"
        )

    def _run(self, write: bool, fn: Callable[[Tx], T]) -> tuple[T, list[StoredEvent]]:
        import psycopg
        from psycopg.pq import TransactionStatus

        try:
            with self._pool.connection(timeout=self._busy_timeout) as conn:
                locked = False
                try:
                    if write:
                        # One round trip (no parameters: the simple protocol
                        # takes several statements).  The lock is session-level,
                        # released below: the commit/rollback callbacks (which
                        # delete orphaned files) also run under it, as on SQLite.
                        conn.execute(self._begin_write)
                        locked = True
                    else:
                        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    tx = SqlTx(PostgresDb(conn))
                    try:
                        result = fn(tx)
                        if locked and not tx.committed_callbacks:
                            conn.execute(f"COMMIT; SELECT pg_advisory_unlock({WRITE_LOCK})")
                            locked = False
                        else:
                            conn.execute("COMMIT")
                    except BaseException:
                        if (
                            not conn.closed
                            and conn.info.transaction_status != TransactionStatus.IDLE
                        ):
                            conn.execute("ROLLBACK")
                        if not conn.closed:
                            for callback in tx.rollback_callbacks:
                                callback()
                        raise
                    for callback in tx.committed_callbacks:
                        callback()
                finally:
                    if not conn.closed:
                        if conn.info.transaction_status != TransactionStatus.IDLE:
                            conn.execute("ROLLBACK")  # it failed before fn ran
                        if locked:
                            conn.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK,))
        except psycopg.errors.LockNotAvailable:
            raise ServiceUnavailable("Storage is busy, try again") from None
        except psycopg.OperationalError as exc:
            log.warning("storage unavailable error=%s", str(exc).strip().splitlines()[0])
            raise ServiceUnavailable("Storage is unavailable, try again") from None
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg_pool"):  # PoolTimeout
                raise ServiceUnavailable("Storage is busy, try again") from None
            raise
        return result, tx.appended

    def close(self) -> None:
        self._pool.close()


@contextlib.asynccontextmanager
async def open_postgres_store(url: str, config: StorageConfig) -> AsyncIterator[PostgresStore]:
    """Migrate the database at ``url`` and yield a store over it.

    The pool (and its connections) is closed when the block exits, after every
    call in flight has finished.
    """
    check_url(url)

    def setup() -> PostgresStore:
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        try:
            applied = apply_pg_migrations(url)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"storage.url: cannot connect to PostgreSQL: {first}") from None
        if applied:
            log.info("migrations applied backend=postgresql ids=%s", ",".join(applied))
        size = config.read_connections + 1
        pool = ConnectionPool(
            url,
            min_size=size,
            max_size=size,
            kwargs={"autocommit": True},  # we issue BEGIN / COMMIT ourselves
            open=False,
            name="trio-events",
        )
        try:
            pool.open(wait=True, timeout=max(config.busy_timeout, 1.0))
        except PoolTimeout:
            pool.close()
            raise ConfigError("storage.url: PostgreSQL did not accept connections") from None
        return PostgresStore(pool, config.read_connections, config.busy_timeout)

    store = await trio.to_thread.run_sync(setup)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.close)
