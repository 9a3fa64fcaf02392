"""The cluster bus: every process hears the events every other process commits.

With ``[bus] backend = "local"`` there is one process and nothing to do: the
store's commit listener feeds the broker directly.  With ``"redis"`` each
process also publishes the events of its own commits to one Redis pub/sub
channel, right after the commit, and subscribes to that channel to hand every
other process's events to its broker.

Redis is a doorbell with the payload attached, never the source of truth: the
event log is.  The broker routes strictly by consecutive event id and reads
the log whenever the next id is not at hand (see :mod:`.broker`), so a message
that arrives twice is dropped, one that arrives early waits for the log to
fill the gap, and one that never arrives (Redis restarted, a publish failed,
pub/sub dropped a slow subscriber) is read from the log.  While Redis is
unreachable the broker polls the log every ``bus.fallback_poll_interval``
seconds instead of every second, :attr:`RedisBus.connected` is false (shown
by ``/readyz`` and ``/metrics``), and the bus keeps reconnecting with capped
exponential back-off.  So losing Redis costs latency, never an event.

Ownership: :meth:`RedisBus.run` runs in the server's nursery; inside it, one
connection attempt at a time owns a nursery with the subscriber, the publisher
and a health check.  Any Redis error cancels that nursery and the loop starts
a new attempt; shutdown cancels the whole thing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
from collections.abc import Sequence
from typing import Any

import trio

from .broker import Broker
from .config import BusConfig
from .model import StoredEvent
from .store import Store

__all__ = ["RedisBus", "decode_events", "encode_events"]

log = logging.getLogger("trio_events.bus")

PUBLISH_QUEUE = 10_000  # batches waiting for Redis; beyond that the log has them
HEALTH_INTERVAL = 1.0  # seconds between PINGs of the publishing connection
TIMEOUT = 2.0  # seconds any single Redis command may take
BACKOFF_MAX = 5.0


def encode_events(origin: str, events: Sequence[StoredEvent]) -> str:
    """``<origin>\n<JSON list of events>``: the origin comes first so that a
    process recognises its own messages without parsing them."""
    body = json.dumps(
        [
            [e.event_id, e.event_type, e.room_id, e.audience, e.payload, e.created_utc]
            for e in events
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return f"{origin}\n{body}"


def message_origin(message: bytes) -> bytes:
    return message.partition(b"\n")[0]


def decode_events(message: str | bytes) -> tuple[str, list[StoredEvent]]:
    """Parse a bus message; raises ValueError (or KeyError/TypeError) if malformed."""
    raw = message.encode() if isinstance(message, str) else message
    origin, newline, body = raw.partition(b"\n")
    if not newline:
        raise ValueError("a bus message is <origin>\\n<events>")
    events = [
        StoredEvent(
            event_id=int(row[0]),
            event_type=str(row[1]),
            room_id=None if row[2] is None else int(row[2]),
            audience=None if row[3] is None else tuple(int(u) for u in row[3]),
            payload=str(row[4]),
            created_utc=int(row[5]),
        )
        for row in _rows(body)
    ]
    return origin.decode(), events


def _rows(body: bytes) -> list[Any]:
    rows = json.loads(body)
    if not isinstance(rows, list):
        raise ValueError("the events of a bus message are a JSON list")
    return rows


def _failures() -> tuple[type[BaseException], ...]:
    """What losing Redis looks like: coredis's errors, and the socket's and
    anyio's underneath (coredis can also raise those while a connection is torn
    down)."""
    import anyio
    from coredis.exceptions import RedisError

    return (
        RedisError,
        OSError,
        TimeoutError,
        trio.TooSlowError,
        anyio.ClosedResourceError,
        anyio.BrokenResourceError,
        anyio.EndOfStream,
    )


class RedisBus:
    """Publishes this process's commits to Redis and feeds the broker everyone's."""

    def __init__(self, config: BusConfig, broker: Broker, store: Store) -> None:
        self._config = config
        self._broker = broker
        self._store = store
        self.channel = config.channel
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._origin_bytes = self.origin.encode()
        self.connected = False
        self.published = 0
        self.received = 0
        self.reconnects = 0
        self._send, self._receive = trio.open_memory_channel[list[StoredEvent]](PUBLISH_QUEUE)
        self._normal_poll = broker.poll_interval

    # called by the store right after each commit of this process; never blocks
    def notify_committed(self, events: list[StoredEvent]) -> None:
        # When Redis is far behind or down the batch is dropped: the other
        # brokers read it from the log.
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait(events)

    def _client(self) -> Any:
        import coredis

        return coredis.Redis.from_url(
            self._config.url,
            connect_timeout=TIMEOUT,
            stream_timeout=None,  # the subscriber waits for messages indefinitely
            decode_responses=False,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected to Redis until cancelled; report started at once
        (the server serves, degraded, while Redis is unreachable)."""
        self._store.add_commit_listener(self.notify_committed)
        self._degraded()
        task_status.started()
        failures = _failures()  # imports coredis (half a second): only here
        delay = 0.1
        try:
            while True:
                try:
                    await self._connected_session()
                except* failures as group:
                    # (except*: a cancellation in the same group still propagates;
                    # coredis may raise errors of its own while being cancelled)
                    if trio.current_effective_deadline() != -math.inf:
                        log.warning(
                            "redis unavailable url=%s error=%s", self._safe_url, _first(group)
                        )
                if self.connected:
                    delay = 0.1  # it was up: retry quickly, then back off again
                self._degraded()
                await trio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                self.reconnects += 1
        finally:
            self._store.remove_commit_listener(self.notify_committed)

    @property
    def _safe_url(self) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(self._config.url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}:{parts.port or 6379}"

    def _degraded(self) -> None:
        if self.connected:
            log.warning("bus degraded: reading the event log every %ss", self._fallback)
        self.connected = False
        self._broker.poll_interval = self._fallback

    @property
    def _fallback(self) -> float:
        return self._config.fallback_poll_interval

    async def _connected_session(self) -> None:
        from coredis.retry import NoRetryPolicy

        client = self._client()
        # connect_timeout bounds connecting; every command below has its own bound.
        async with client:
            with trio.fail_after(TIMEOUT):
                await client.ping()
            pubsub = client.pubsub(
                channels=[self.channel],
                ignore_subscribe_messages=True,
                retry_policy=NoRetryPolicy(),
                subscription_timeout=TIMEOUT,
            )
            async with pubsub, trio.open_nursery() as nursery:
                # Subscribed: from here on every commit reaches us.  Setting the
                # poll interval makes the broker read the log once, for whatever
                # was committed while we were away.
                self.connected = True
                self._broker.poll_interval = self._normal_poll
                log.info("bus connected url=%s channel=%s", self._safe_url, self.channel)
                nursery.start_soon(self._subscriber, pubsub)
                nursery.start_soon(self._publisher, client)
                nursery.start_soon(self._health, client)

    async def _subscriber(self, pubsub: Any) -> None:
        async for message in pubsub:
            if message.get("type") != "message":
                continue
            data = message["data"]
            if message_origin(data) == self._origin_bytes:
                continue  # our own commits reached the broker directly
            try:
                _, events = decode_events(data)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                log.warning("bus message ignored error=%s", exc)
                continue
            if not events:
                continue
            self.received += len(events)
            self._broker.notify_committed(events)
        raise OSError("subscription ended")

    async def _publisher(self, client: Any) -> None:
        while True:
            batch = await self._receive.receive()
            events = list(batch)
            while True:  # coalesce what queued meanwhile into one message
                try:
                    events.extend(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            with trio.fail_after(TIMEOUT):
                await client.publish(self.channel, encode_events(self.origin, events))
            self.published += len(events)

    async def _health(self, client: Any) -> None:
        while True:
            await trio.sleep(HEALTH_INTERVAL)
            with trio.fail_after(TIMEOUT):
                await client.ping()


def _first(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
