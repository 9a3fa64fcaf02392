"""The broker: one long-lived task that routes committed events to streams.

Events reach it two ways.  The store calls :meth:`Broker.notify_committed`
right after each commit of this process (cheap, in commit order), and a
cluster bus (:mod:`.bus`) hands it the events other processes committed; and
every ``poll_interval`` seconds the broker asks the log for anything newer than
what it routed, which picks up writes of other processes (the CLI, or every
process while the bus is down) and fills any gap.  The broker never trusts
the first two paths for completeness: it routes strictly by consecutive event
id and reads the log whenever the next id is not at hand.

Routing an event is synchronous and never waits for a subscriber: each
subscriber has a bounded memory channel, frames are handed over with
``send_nowait``, and a subscriber whose queue is full is closed with 4008
(it may resume later); the broker and every other stream carry on.

Each distinct payload is encoded once and the same ``str`` is queued to every
recipient; room events, which differ per viewer, are encoded once per distinct
rendering (most viewers share one).
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import attrs
import trio

from .acl import AclStore, recipients
from .events import EventType, encode_shared, is_internal, is_per_recipient
from .model import StoredEvent
from .store import Store, Tx
from .wire import render_room

__all__ = [
    "FLUSH",
    "Broker",
    "BrokerStatistics",
    "CloseCode",
    "DirectWrite",
    "Subscriber",
    "Written",
]

log = logging.getLogger("trio_events.broker")

BATCH = 1000  # events read from the log at once
COALESCE = 0.001  # seconds the broker lets commits accumulate while it is busy
BUSY = 0.005  # woken within this long after a run counts as busy
PENDING_MAX = 10_000  # committed events kept in memory before the broker falls back to the log
# Ended credentials remembered for handshakes still between authentication and
# subscription (see ``revoked_after``); older ones are forgotten.
REVOCATIONS_KEPT = 10_000


class CloseCode:
    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL = 1011
    SESSION_ENDED = 4001
    SLOW_CONSUMER = 4008


class Written(enum.Enum):
    NOTHING = 0  # not now: queue the frame
    ALL = 1  # the whole frame is with the kernel
    PART = 2  # the transport keeps the rest until the sender flushes it


DirectWrite = Callable[[Sequence[str]], Written]
# Queued after a partial direct write: "finish the frame you started".
FLUSH = "\x00flush"


@attrs.frozen
class BrokerStatistics:
    subscribers: int
    events_routed: int
    frames_queued: int
    drops: int
    last_event_id: int


@attrs.define(eq=False)
class Subscriber:
    """One open stream's inbox.  The broker writes, the stream's sender reads."""

    user_id: int
    credential_id: int
    _send: trio.MemorySendChannel[str]
    receive: trio.MemoryReceiveChannel[str]
    hello_event_id: int
    close_code: int | None = None
    close_reason: str = ""
    ended: trio.Event = attrs.field(factory=trio.Event)
    acl: AclStore | None = None  # the access table at hello_event_id, for resume
    # The fast path: a transport may install a function that writes a frame to
    # its socket at once, without blocking (see ``offer``).  None: always queue.
    direct: DirectWrite | None = None
    # Frames handed to the channel and not yet written by the sender.
    outstanding: int = 0
    _held: list[str] | None = None  # frames kept during one routing run
    on_end: Callable[[], None] | None = None  # the stream's reaction to end()
    on_queue: Callable[[], None] | None = None  # called when a frame was queued

    def offer(self, frame: str) -> bool:
        """Deliver ``frame`` without waiting; False if the queue is full or closed.

        When nothing is waiting to be written and the transport allows it, the
        frame goes straight to the socket from here (the broker's task): no
        task switch, no queue.  If the socket takes only part of it, the rest
        stays with the transport and a ``FLUSH`` marker is queued so that the
        sender finishes it before anything else.  Otherwise the frame is
        queued, in order, for the sender.
        """
        if self._held is not None:  # the broker is batching: keep the order
            self._held.append(frame)
            return True
        if self.direct is not None and self.outstanding == 0:
            written = self.direct((frame,))
            if written is Written.ALL:
                return True
            if written is Written.PART:
                frame = FLUSH
        return self._queue(frame)

    def _queue(self, frame: str) -> bool:
        try:
            self._send.send_nowait(frame)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        self.outstanding += 1
        if self.on_queue is not None:
            self.on_queue()  # the stream starts its sender if none is running
        return True

    def hold(self, frame: str) -> bool:
        """While the broker routes a run of events: keep ``frame`` to be written
        together with the others at :meth:`release` (one syscall per stream per
        run).  False when this stream must take the ordinary path instead."""
        if self._held is not None:
            self._held.append(frame)
            return True
        if self.direct is None or self.outstanding:
            return False
        self._held = [frame]
        return True

    def release(self) -> bool:
        """Write what :meth:`hold` kept; False if it did not fit in the queue."""
        frames, self._held = self._held, None
        if not frames:
            return True
        if self.direct is not None and self.outstanding == 0:
            written = self.direct(frames)
            if written is Written.ALL:
                return True
            if written is Written.PART:
                return self._queue(FLUSH)
        return all(self._queue(frame) for frame in frames)

    def written(self, count: int) -> None:
        """The sender wrote ``count`` queued frames."""
        self.outstanding -= count

    def end(self, code: int, reason: str) -> None:
        """Stop queueing; the sender drains what is queued, then closes with ``code``."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self.release()  # what was routed to it before the end still goes out
        self.direct = None
        self._send.close()
        if self.on_end is not None:
            self.on_end()
        self.ended.set()

    @property
    def queued(self) -> int:
        return self.receive.statistics().current_buffer_used


def _events_after(event_id: int, tx: Tx) -> list[StoredEvent]:
    return tx.events_after(event_id, BATCH)


class Broker:
    def __init__(self, store: Store, queue_size: int, poll_interval: float = 1.0) -> None:
        self._store = store
        self._queue_size = queue_size
        self._poll_interval = poll_interval
        self._acl = AclStore()
        self._by_user: dict[int, set[Subscriber]] = {}
        self._pending: deque[StoredEvent] = deque()
        self._wakeup = trio.Event()
        self._poll_now = False
        # Set after the next routing run; made only while someone waits for it
        # (reach), so the routing loop allocates nothing for it otherwise.
        self._progress: trio.Event | None = None
        self._routed = 0
        self._frames = 0
        self._drops = 0
        self._closed = False
        self._touched: list[Subscriber] | None = None  # streams holding frames in a run
        # Revocations routed so far, for `revoked_after`: credential id -> the
        # event that ended it (oldest first), and suspended user -> the event
        # that suspended them (dropped when reactivated).
        self._ended_at: dict[int, int] = {}
        self._forgotten_through = 0  # ended credentials up to this id may be forgotten
        self._suspended_at: dict[int, int] = {}

    @property
    def last_event_id(self) -> int:
        return self._acl.event_id

    # subscriptions

    def count_streams(self, user_id: int) -> int:
        return len(self._by_user.get(user_id, ()))

    def acl_copy(self) -> AclStore:
        """The access table as of :attr:`last_event_id`."""
        return self._acl.copy()

    @contextlib.contextmanager
    def subscribe(
        self, user_id: int, credential_id: int, *, with_acl: bool = False
    ) -> Iterator[Subscriber]:
        """Register a stream for the block; it receives every event routed after
        ``hello_event_id``, and is always unregistered on exit.  ``with_acl``
        also captures the access table at that id, in the same step (resume)."""
        send, receive = trio.open_memory_channel[str](self._queue_size)
        subscriber = Subscriber(
            user_id=user_id,
            credential_id=credential_id,
            send=send,
            receive=receive,
            hello_event_id=self.last_event_id,
            acl=self._acl.copy() if with_acl else None,
        )
        if self._closed:
            subscriber.end(CloseCode.GOING_AWAY, "server shutting down")
        self._by_user.setdefault(user_id, set()).add(subscriber)
        try:
            yield subscriber
        finally:
            streams = self._by_user.get(user_id)
            if streams is not None:
                streams.discard(subscriber)
                if not streams:
                    del self._by_user[user_id]
            send.close()
            receive.close()

    def revoked_after(self, user_id: int, credential_id: int, event_id: int) -> bool | None:
        """Whether an event routed after ``event_id`` ended this credential or
        suspended the user; None when that is no longer known.

        A stream's handshake authenticates against the store, then subscribes.
        A logout routed in between reaches no subscriber of it, so the
        handshake asks here, right after subscribing, with the id the broker
        had routed before it authenticated: every revocation up to that id
        committed before the authentication read, which saw it.
        """
        if self._suspended_at.get(user_id, 0) > event_id:
            return True
        if self._ended_at.get(credential_id, 0) > event_id:
            return True
        return None if event_id < self._forgotten_through else False

    def close_all(self, code: int, reason: str) -> None:
        """End every stream (at shutdown); later subscribers are ended at once."""
        self._closed = True
        for streams in list(self._by_user.values()):
            for subscriber in list(streams):
                subscriber.end(code, reason)

    def queue_depths(self) -> list[int]:
        """Frames waiting in each open stream's queue (for metrics)."""
        return [s.queued for streams in self._by_user.values() for s in streams]

    def statistics(self) -> BrokerStatistics:
        return BrokerStatistics(
            subscribers=sum(len(s) for s in self._by_user.values()),
            events_routed=self._routed,
            frames_queued=self._frames,
            drops=self._drops,
            last_event_id=self.last_event_id,
        )

    # input

    def notify_committed(self, events: list[StoredEvent]) -> None:
        """Commit listener: remember the events and wake the broker; never blocks."""
        self._pending.extend(events)
        while len(self._pending) > PENDING_MAX:
            self._pending.popleft()  # the log still has them
        self._wakeup.set()

    @property
    def poll_interval(self) -> float:
        return self._poll_interval

    @poll_interval.setter
    def poll_interval(self, seconds: float) -> None:
        """Change how often the log is read (the bus shortens it while down)."""
        self._poll_interval = seconds
        self.request_poll()

    def request_poll(self) -> None:
        """Read the log soon, whatever is pending (e.g. after the bus reconnects)."""
        self._poll_now = True
        self._wakeup.set()

    async def reach(self, event_id: int) -> None:
        """Return once every event through ``event_id`` is routed, reading the
        log at once (the caller bounds the wait).

        For a client that resumes on this process with an id it saw on
        another one that is ahead (the bus has not brought it here yet).
        """
        while self.last_event_id < event_id:
            self.request_poll()
            if self._progress is None:
                self._progress = trio.Event()
            await self._progress.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the access table, then route until cancelled."""
        snapshot = await self._store.read(lambda tx: tx.acl_snapshot())
        self._acl = AclStore(snapshot)
        self._store.add_commit_listener(self.notify_committed)
        try:
            task_status.started()
            busy_until = 0.0
            while True:
                with trio.move_on_after(self._poll_interval) as scope:
                    await self._wakeup.wait()
                if trio.current_time() < busy_until:
                    # Under load (woken again soon after the last run), wait a
                    # moment so that commits arriving together are routed as one
                    # run: one write per stream for all of them.
                    await trio.sleep(COALESCE)
                self._wakeup = trio.Event()
                poll, self._poll_now = scope.cancelled_caught or self._poll_now, False
                await self._catch_up(poll=poll)
                if self._progress is not None:
                    self._progress.set()
                    self._progress = None
                busy_until = trio.current_time() + BUSY
        finally:
            self._store.remove_commit_listener(self.notify_committed)

    async def _catch_up(self, *, poll: bool) -> None:
        """Route every event after the last routed one, from memory or the log."""
        while True:
            pending = self._pending
            while pending and pending[0].event_id <= self.last_event_id:
                pending.popleft()
            if pending and pending[0].event_id == self.last_event_id + 1:
                run: list[StoredEvent] = []
                while pending and pending[0].event_id == self.last_event_id + len(run) + 1:
                    run.append(pending.popleft())
                self.route_many(run)
                continue
            if not pending and not poll:
                return
            events = await self._store.read(partial(_events_after, self.last_event_id))
            poll = len(events) == BATCH  # a full batch: there may be more
            self.route_many(events)
            if not events:
                # The log has nothing newer (not expected: an event is in the
                # log before anyone hears of it), so route what is pending.
                while pending:
                    self.route(pending.popleft())
                return

    # routing (synchronous: no awaits between taking an event and queueing it)

    def route_many(self, events: Sequence[StoredEvent]) -> None:
        """Route a run of events, writing each stream's frames of the whole run
        together: under load one syscall carries many events to a stream."""
        if len(events) == 1:
            self.route(events[0])
            return
        self._touched = []
        try:
            for event in events:
                self.route(event)
        finally:
            touched, self._touched = self._touched, None
            for subscriber in touched:
                if not subscriber.release() and subscriber.close_code is None:
                    self._slow(subscriber)

    def _slow(self, subscriber: Subscriber) -> None:
        self._drops += 1
        log.warning("slow consumer user=%s queued=%d", subscriber.user_id, subscriber.queued)
        subscriber.end(CloseCode.SLOW_CONSUMER, "slow consumer")

    def route(self, event: StoredEvent) -> None:
        if event.event_id <= self.last_event_id:
            return
        self._acl.apply(event)
        self._routed += 1
        if is_internal(event.event_type):
            self._apply_internal(event)
            return
        users = recipients(event, self._acl, self._by_user.keys())
        if not users:
            return
        payload = json.loads(event.payload) if is_per_recipient(event) else None
        shared = encode_shared(event) if payload is None else None
        rendered: dict[tuple[object, ...], str] = {}
        for user_id in users:
            if shared is not None:
                frame = shared
            else:
                assert payload is not None
                template = payload["roomTemplate"]
                key = tuple(template["perUser"].get(str(user_id), ()))
                cached = rendered.get(key)
                if cached is None:
                    cached = rendered[key] = json.dumps(
                        {
                            "type": event.event_type,
                            "data": {"room": render_room(template, user_id)},
                            "eventId": event.event_id,
                        },
                        separators=(",", ":"),
                        ensure_ascii=False,
                    )
                frame = cached
            touched = self._touched
            # No copy: nothing below (writes, end(), on_end) unregisters a stream;
            # that happens only when its `subscribe` block exits, in its own task.
            for subscriber in self._by_user.get(user_id, ()):
                if touched is not None and subscriber.hold(frame):
                    if len(subscriber._held or ()) == 1:
                        touched.append(subscriber)
                    self._frames += 1
                elif subscriber.offer(frame):
                    self._frames += 1
                elif subscriber.close_code is None:
                    self._slow(subscriber)

    def _apply_internal(self, event: StoredEvent) -> None:
        if event.event_type == EventType.SESSION_ENDED:
            data = json.loads(event.payload)
            ended = set(data["credentialIds"])
            self._remember_ended(ended, event.event_id)
            for subscriber in list(self._by_user.get(data["userId"], ())):
                if subscriber.credential_id in ended:
                    subscriber.end(CloseCode.SESSION_ENDED, "session ended")
        elif event.event_type == EventType.ACL_USER:
            data = json.loads(event.payload)
            if data["active"]:
                self._suspended_at.pop(data["userId"], None)
            else:
                self._suspended_at[data["userId"]] = event.event_id
                for subscriber in list(self._by_user.get(data["userId"], ())):
                    subscriber.end(CloseCode.SESSION_ENDED, "user suspended")

    def _remember_ended(self, credential_ids: set[int], event_id: int) -> None:
        for credential_id in credential_ids:
            self._ended_at.pop(credential_id, None)  # re-ended: it moves to the newest end
            self._ended_at[credential_id] = event_id
        while len(self._ended_at) > REVOCATIONS_KEPT:
            oldest = next(iter(self._ended_at))
            forgotten = self._ended_at.pop(oldest)
            self._forgotten_through = max(self._forgotten_through, forgotten)
