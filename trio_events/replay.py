"""Resume: the events a user missed, judged by the access rule at each commit.

A stream opened with ``?since=N`` is subscribed first, at the broker's current
event id H (everything after H reaches it live).  This module then computes
what the user should have received in (N, H]:

1. it takes the broker's access table as it stood at H (a copy made in the
   same synchronous step as the subscription) and runs it *backwards* over
   the ``acl.*`` events of (N, H], each of which records the state it
   replaced, to get the table as it stood at N;
2. it reads (N, H] forwards in batches, applying ``acl.*`` events as it goes
   and keeping each event that the user could see at that point of the log.

So a user removed from a room while away gets that room's events up to the
removal, its RoomDeleted, and nothing after; a user re-added later does not
get what was said while they were out.  Replayed ids are at most H and live
ids are above H: no gap, no duplicate.

When N is older than the retained log (retention has trimmed past it), or the
user missed more than ``max_replay`` events, the answer is
``ResyncRequired``: the client refetches over REST and carries on live.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import attrs
import trio

from .acl import AclStore, recipients
from .errors import BadRequest, ServiceUnavailable
from .events import encode_for, is_internal
from .model import StoredEvent
from .services.validate import query_value
from .store import Store, Tx

if TYPE_CHECKING:
    from .services import Services

__all__ = ["Replay", "parse_since", "plan_replay", "resync_frame"]

BATCH = 1000
CATCH_UP_TIMEOUT = 5.0  # seconds a resume waits for this process to reach ``since``


@attrs.frozen
class Replay:
    frames: list[str]
    resync_oldest: int | None = None  # set when the client must resync instead
    next_since: int = 0  # the id to resume from after these frames

    @property
    def resumed(self) -> bool:
        return self.resync_oldest is None


def parse_since(raw: str | None, latest: int) -> int | None:
    """The ``since`` query value, checked: a 400 for anything but 0..latest.

    ``None`` (no ``since`` at all) means "do not resume"; an empty value is
    an error like any other that is not an event id."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise BadRequest("Query parameter 'since' must be a non-negative event id")
    since = int(raw)
    if since > latest:
        raise BadRequest(f"Query parameter 'since' is in the future: the newest event is {latest}")
    return since


async def checked_since(svc: Services, values: Sequence[str]) -> int | None:
    """``since`` of a resume or catch-up (``values``: each occurrence in the
    query, see :func:`~trio_events.services.validate.query_value`), checked against the whole log.

    Usually it is at most what this process's broker has routed.  In cluster
    mode the client may have seen newer events on another process that is
    ahead of this one; then the shared log is asked, and if the id is there
    the broker catches up first (reading the log), so that the resume starts
    exactly after ``since``.  Only an id beyond the log is "in the future".
    """
    broker = svc.broker
    raw = query_value(values, "since")
    with contextlib.suppress(BadRequest):
        return parse_since(raw, broker.last_event_id)
    latest = await svc.store.read(lambda tx: tx.latest_event_id())
    since = parse_since(raw, latest)  # malformed, or truly in the future: 400
    assert since is not None
    with trio.move_on_after(CATCH_UP_TIMEOUT) as scope:
        await broker.reach(since)
    if scope.cancelled_caught:
        raise ServiceUnavailable("The server is catching up with the event log, try again")
    return since


def resync_frame(oldest: int) -> str:
    return json.dumps(
        {"type": "ResyncRequired", "data": {"oldestEventId": oldest}}, separators=(",", ":")
    )


def _between(after: int, until: int, tx: Tx) -> list[StoredEvent]:
    return tx.events_between(after, until, BATCH)


def _opening(since: int, until: int, tx: Tx) -> tuple[int, list[StoredEvent], list[StoredEvent]]:
    """One snapshot: how far the log is trimmed, the access changes in the
    range, and its first batch of events (for most resumes, all of them)."""
    return (
        tx.trimmed_through(),
        tx.acl_events_between(since, until),
        tx.events_between(since, until, BATCH),
    )


async def plan_replay(
    store: Store,
    acl_at_until: AclStore,
    user_id: int,
    since: int,
    until: int,
    limit: int,
) -> Replay:
    """What ``user_id`` may receive in (``since``, ``until``], at most ``limit`` frames.

    ``acl_at_until`` must be the access table at ``until``; it is not changed.
    The range is cut short only by a visible event beyond the limit: exactly
    ``limit`` visible events followed by events the user may not see is the
    whole range, not a short one.  When the range is cut short,
    ``next_since`` is the last id examined before that event (below
    ``until``): HTTP catch-up pages on from there, a stream asks the client
    to resync instead.  A resume that fits in one batch costs one read (a
    reconnect storm is hundreds of them at once).
    """
    trimmed, acl_events, batch = await store.read(partial(_opening, since, until))
    if since < trimmed:
        return Replay(frames=[], resync_oldest=trimmed + 1, next_since=until)
    acl = acl_at_until.copy()
    for event in reversed(acl_events):
        acl.unapply(event)
    frames: list[str] = []
    after = since
    reads = 1
    while batch:
        for event in batch:
            acl.apply(event)
            if not is_internal(event.event_type) and recipients(event, acl, (user_id,)):
                if len(frames) >= limit:
                    short = Replay(frames=frames, resync_oldest=None, next_since=after)
                    return await _untrimmed(store, since, until, reads, short)
                frames.append(encode_for(event, user_id))
            after = event.event_id
        if after >= until:
            break
        batch = await store.read(partial(_between, after, until))
        reads += 1
    whole = Replay(frames=frames, resync_oldest=None, next_since=until)
    return await _untrimmed(store, since, until, reads, whole)


async def _untrimmed(store: Store, since: int, until: int, reads: int, replay: Replay) -> Replay:
    """``replay``, unless it took several reads and retention trimmed past
    ``since`` in between: then a later read may have missed trimmed events,
    and the client must resync rather than get a silent hole."""
    if reads == 1:
        return replay
    trimmed = await store.read(lambda tx: tx.trimmed_through())
    if since < trimmed:
        return Replay(frames=[], resync_oldest=trimmed + 1, next_since=until)
    return replay
