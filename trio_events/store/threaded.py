"""What both backends share: transactions as functions run in worker threads.

A backend subclasses :class:`ThreadedStore` and supplies :meth:`_run`, which
runs one function of a :class:`Tx` in one transaction, synchronously, in a
worker thread.  This class owns the rest, identical for SQLite and
PostgreSQL: writers queue on a fair :class:`trio.Lock` (one at a time per
process), readers on a semaphore of ``read_connections`` slots, both bounded
by ``busy_timeout`` (then :class:`ServiceUnavailable`); threads are never
abandoned on cancellation, so a transaction always ends before its caller
sees the cancellation; commit listeners run after each commit, still under
the write lock, so they see commits in commit order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from ..errors import ServiceUnavailable
from ..model import StoredEvent
from .base import CommitListener, StoreStatistics, Tx

__all__ = ["ThreadedStore"]

T = TypeVar("T")


class ThreadedStore:
    def __init__(self, read_connections: int, busy_timeout: float) -> None:
        self._busy_timeout = busy_timeout
        self._write_lock = trio.Lock()
        self._read_slots = trio.Semaphore(read_connections)
        self._threads = trio.CapacityLimiter(read_connections + 1)
        self._reads = 0
        self._writes = 0
        self._failed_writes = 0
        self._listeners: list[CommitListener] = []
        self.observe: Callable[[str, float], None] | None = None  # timing hook (metrics)

    def _run(self, write: bool, fn: Callable[[Tx], T]) -> tuple[T, list[StoredEvent]]:
        """Run ``fn`` in one transaction (in a worker thread); return its result
        and the events it appended."""
        raise NotImplementedError

    async def read(self, fn: Callable[[Tx], T]) -> T:
        started = trio.current_time()
        try:
            with trio.fail_after(self._busy_timeout):
                await self._read_slots.acquire()
        except trio.TooSlowError:
            raise ServiceUnavailable("Storage is busy, try again") from None
        try:
            self._reads += 1
            result, _ = await trio.to_thread.run_sync(self._run, False, fn, limiter=self._threads)
            if self.observe is not None:
                self.observe("read", trio.current_time() - started)
            return result
        finally:
            self._read_slots.release()

    async def write(self, fn: Callable[[Tx], T]) -> T:
        started = trio.current_time()
        try:
            with trio.fail_after(self._busy_timeout):
                await self._write_lock.acquire()
        except trio.TooSlowError:
            raise ServiceUnavailable("Storage is busy, try again") from None
        try:
            self._writes += 1
            result, appended = await trio.to_thread.run_sync(
                self._run, True, fn, limiter=self._threads
            )
            if self.observe is not None:
                self.observe("write", trio.current_time() - started)
            # Still under the write lock: listeners see commits in commit order.
            if appended:
                for listener in self._listeners:
                    listener(appended)
            return result
        except BaseException:
            self._failed_writes += 1
            raise
        finally:
            self._write_lock.release()

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def remove_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.remove(listener)

    async def ping(self) -> None:
        await self.read(lambda tx: tx.count_users())

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            reads=self._reads, writes=self._writes, failed_writes=self._failed_writes
        )
