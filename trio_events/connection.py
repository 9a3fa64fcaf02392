"""One event stream: a nursery with a reader, a heartbeat and a sender.

The three tasks share one fate (and the broker, when it ends the
subscription, cancels them through a callback, so that a sender blocked on a
full socket is interrupted).  Whichever ends first decides how the stream
closes (a :class:`Verdict`) and cancels the other two; the caller then sends
the close frame, bounded by ``CLOSE_TIMEOUT`` and shielded, and the
subscription context manager unregisters the subscriber.  Nothing outlives
the ``async with`` that opened the nursery.

- **sender**: the Hello frame, then every frame the broker queued, in order.
  When the broker ends the subscription (shutdown 1001, session ended 4001,
  slow consumer 4008) the sender drains what is queued only on shutdown.
- **reader**: client frames.  ``{"type": "Ping", "data": x}`` is answered with
  ``{"type": "Pong", "data": x}``; other text is ignored; a frame over
  ``max_client_frame`` bytes closes with 1009; more than ``client_frame_rate``
  frames in one second closes with 1008.
- **heartbeat**: on transports that can ping, a WebSocket ping every
  ``heartbeat_interval`` seconds; no pong within ``heartbeat_timeout`` closes
  with 1011.

The transport is a narrow interface (:class:`Transport`): frames arrive at it
already encoded, so a faster transport can replace the Quart websocket
without touching this module or the broker.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import attrs
import trio

from .broker import CloseCode, Subscriber
from .config import EventsConfig

__all__ = ["CLOSE_TIMEOUT", "MessageTooBig", "PeerClosed", "Transport", "Verdict", "run_stream"]

log = logging.getLogger("trio_events.stream")

CLOSE_TIMEOUT = 5.0
MAX_BATCH = 256  # frames written together at most; under light load a batch is one frame


class PeerClosed(Exception):
    """The client closed the connection (or it broke)."""


class MessageTooBig(Exception):
    """A client message grew past the limit before it was complete."""


class Transport(Protocol):
    """What a stream needs from a WebSocket connection."""

    supports_ping: bool

    async def send(self, frame: str) -> None:
        """Send one text frame."""
        ...

    async def send_many(self, frames: Sequence[str]) -> None:
        """Send text frames in order, in as few writes as the transport can."""
        ...

    async def receive(self) -> str | bytes:
        """The next client message; raises :class:`PeerClosed` when there is none."""
        ...

    async def ping(self) -> None:
        """Send a ping and return when its pong arrives (only if ``supports_ping``)."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame with ``code`` and end the connection."""
        ...


@attrs.define
class Verdict:
    code: int | None = None  # None: the peer closed, nothing to send
    reason: str = ""


class _RateWindow:
    """At most ``limit`` events in any one second (pure, clock passed in)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        while self._times and self._times[0] <= now - 1.0:
            self._times.popleft()
        if len(self._times) >= self._limit:
            return False
        self._times.append(now)
        return True


async def run_stream(
    transport: Transport,
    subscriber: Subscriber,
    hello: str,
    config: EventsConfig,
    *,
    replay: Sequence[str] = (),
) -> Verdict:
    """Serve one stream until any of its tasks ends; close it; return why it closed."""
    verdict = Verdict()
    send_lock = trio.Lock()

    async def send(frame: str) -> None:
        async with send_lock:
            await transport.send(frame)

    async def send_batch(frames: list[str]) -> None:
        async with send_lock:
            await transport.send_many(frames)

    async with trio.open_nursery() as nursery:

        def finish(code: int | None, reason: str) -> None:
            if verdict.code is None and not nursery.cancel_scope.cancel_called:
                verdict.code, verdict.reason = code, reason
            nursery.cancel_scope.cancel()

        async def sender() -> None:
            try:
                await send(hello)
                for start in range(0, len(replay), MAX_BATCH):  # a resume's missed events
                    await send_batch(list(replay[start : start + MAX_BATCH]))
                # From now on the broker may write straight to the socket when
                # nothing is queued (the transport decides whether it can).
                if subscriber.close_code is None:
                    subscriber.direct = getattr(transport, "try_write_now", None)
                receive = subscriber.receive
                async for frame in receive:
                    if subscriber.close_code in (CloseCode.SLOW_CONSUMER, CloseCode.SESSION_ENDED):
                        break  # stop at once; a resume will fetch the rest
                    # Coalesce: take whatever else is already queued (bounded,
                    # so one busy stream cannot hold the loop), write it at once.
                    batch = [frame]
                    while len(batch) < MAX_BATCH:
                        try:
                            batch.append(receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await send_batch(batch)
                    subscriber.written(len(batch))
            except PeerClosed:
                finish(None, "connection lost")
                return
            finish(subscriber.close_code or CloseCode.NORMAL, subscriber.close_reason)

        async def reader() -> None:
            window = _RateWindow(config.client_frame_rate)
            while True:
                try:
                    message = await transport.receive()
                except PeerClosed:
                    finish(None, "closed by client")
                    return
                except MessageTooBig:
                    finish(CloseCode.TOO_BIG, "frame too big")
                    return
                size = len(message.encode() if isinstance(message, str) else message)
                if size > config.max_client_frame:
                    finish(CloseCode.TOO_BIG, "frame too big")
                    return
                if not window.allow(trio.current_time()):
                    finish(CloseCode.POLICY, "too many frames")
                    return
                pong = _pong_for(message)
                if pong is not None:
                    try:
                        await send(pong)
                    except PeerClosed:
                        finish(None, "connection lost")
                        return

        def on_end() -> None:
            # Called by the broker as it ends the subscription: a slow or
            # revoked stream must close now, even if the sender is blocked
            # writing to a socket that does not drain.  (A callback rather
            # than a task that waits for it: one task less per open stream.)
            if subscriber.close_code in (CloseCode.SLOW_CONSUMER, CloseCode.SESSION_ENDED):
                finish(subscriber.close_code, subscriber.close_reason)

        async def heartbeat() -> None:
            if not transport.supports_ping:
                return
            while True:
                await trio.sleep(config.heartbeat_interval)
                with trio.move_on_after(config.heartbeat_timeout) as scope:
                    try:
                        await transport.ping()
                    except PeerClosed:
                        finish(None, "connection lost")
                        return
                if scope.cancelled_caught:
                    finish(CloseCode.INTERNAL, "heartbeat timeout")
                    return

        nursery.start_soon(sender)
        nursery.start_soon(reader)
        nursery.start_soon(heartbeat)
        subscriber.on_end = on_end  # (ended already? the sender sees it after Hello)

    subscriber.on_end = None
    if verdict.code is not None:
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            with contextlib.suppress(PeerClosed):
                await transport.close(verdict.code, verdict.reason)
    return verdict


def _pong_for(message: str | bytes) -> str | None:
    """The Pong answering a client ``Ping`` frame, or None for anything else."""
    if not isinstance(message, str):
        return None
    try:
        parsed = json.loads(message)
    except (ValueError, RecursionError):  # not JSON, or nested past Python's stack
        return None
    if not isinstance(parsed, dict) or parsed.get("type") != "Ping":
        return None
    return json.dumps({"type": "Pong", "data": parsed.get("data")}, separators=(",", ":"))
