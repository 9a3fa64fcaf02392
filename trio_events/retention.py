"""Retention: trim the event log by age and by count, a little at a time.

One task, owned by ``open_server``'s nursery, wakes every
``RETENTION_INTERVAL`` seconds and deletes the oldest events that are older
than ``events.retention_seconds`` or beyond the newest
``events.retention_events``.  Each batch of at most ``RETENTION_BATCH`` rows
is its own short write transaction, so writers wait for one small batch at
most, never for a whole trim.  Only a prefix of the log is deleted, and the
log remembers how far it was trimmed, so a resume from an older id gets
``ResyncRequired``, exactly.
"""

from __future__ import annotations

import logging

import trio
import trio.lowlevel

from .config import EventsConfig
from .model import now_ms
from .store import Store, Tx

__all__ = ["RETENTION_BATCH", "RETENTION_INTERVAL", "run_retention", "trim_once"]

log = logging.getLogger("trio_events.retention")

RETENTION_INTERVAL = 60.0
RETENTION_BATCH = 500


async def trim_once(store: Store, config: EventsConfig, now: int | None = None) -> int:
    """Trim what has expired now, batch by batch; return how many events went."""
    cutoff_utc = (now_ms() if now is None else now) - int(config.retention_seconds * 1000)
    total = 0
    while True:

        def trim(tx: Tx) -> int:
            keep_after = tx.latest_event_id() - config.retention_events
            return tx.trim_events(cutoff_utc, keep_after, RETENTION_BATCH)

        deleted = await store.write(trim)
        total += deleted
        if deleted < RETENTION_BATCH:
            break
        await trio.lowlevel.checkpoint()  # let waiting writers in between batches
    if total:
        log.info("trimmed events=%d", total)
    return total


async def run_retention(
    store: Store,
    config: EventsConfig,
    interval: float = RETENTION_INTERVAL,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Trim at start-up and then every ``interval`` seconds, until cancelled."""
    task_status.started()
    while True:
        await trim_once(store, config)
        await trio.sleep(interval)
