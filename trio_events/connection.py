"""One event stream: a nursery with a reader and, while frames queue, a sender.

The tasks share one fate (and the broker, when it ends the subscription,
cancels them through a callback, so that a sender blocked on a full socket is
interrupted).  Whichever ends the stream decides how it closes (a
:class:`Verdict`) and cancels the rest; the caller then sends the close frame,
bounded by ``CLOSE_TIMEOUT`` and shielded, and the subscription context
manager unregisters the subscriber.  Nothing outlives the ``async with`` that
opened the nursery.

- **reader** (for the stream's whole life): client frames.
  ``{"type": "Ping", "data": x}`` is answered with ``{"type": "Pong", "data":
  x}``; other text is ignored; a frame over ``max_client_frame`` bytes closes
  with 1009; more than ``client_frame_rate`` frames in one second closes with
  1008 (WebSocket pings count too).  It also keeps the heartbeat, on
  transports that can ping: a WebSocket ping every ``heartbeat_interval``
  seconds, and 1011 when no pong comes within ``heartbeat_timeout`` (its
  receive has a deadline, so no task sleeps for it).
- **sender**: the Hello frame, the replay, then every frame the broker could
  not write straight to the socket, in order.  It ends after ``SENDER_IDLE``
  seconds with nothing to write, and the broker starts one again when it
  queues a frame (``Subscriber.on_queue``): an idle stream is one task, not
  three, which is most of the memory of an idle stream.  When the broker
  ends the subscription (shutdown 1001, session ended 4001, slow consumer
  4008) the sender drains what is queued only on shutdown.

The transport is a narrow interface (:class:`Transport`): frames arrive at it
already encoded, so a faster transport can replace the Quart websocket
without touching this module or the broker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
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
# Seconds a sender with nothing to write waits before it ends.  Most frames go
# straight to the socket from the broker (``Subscriber.direct``); a sender
# task exists only while frames queue up, so an idle stream costs one task.
SENDER_IDLE = 1.0


class PeerClosed(Exception):
    """The client closed the connection (or it broke)."""


class MessageTooBig(Exception):
    """A client message grew past the limit before it was complete."""


class Transport(Protocol):
    """What a stream needs from a WebSocket connection."""

    supports_ping: bool
    awaiting_pong: bool
    """A ping was sent and its pong has not arrived yet."""
    control_frames: int
    """WebSocket pings (and pongs other than the awaited one) received so far:
    client frames too, they count against the rate.  ``receive`` returns
    after each one."""

    async def send(self, frame: str) -> None:
        """Send one text frame (safe to call from several tasks)."""
        ...

    async def send_many(self, frames: Sequence[str]) -> None:
        """Send text frames in order, in as few writes as the transport can."""
        ...

    async def receive(self, deadline: float = math.inf) -> str | bytes | None:
        """The next client message, or None once ``deadline`` (Trio time) has
        passed first or a control frame has arrived (the awaited pong, say);
        raises :class:`PeerClosed` when there is none.  Nothing is lost when it
        returns None: a message half-received stays.  A client ping is
        answered at the next call, after the caller counted it."""
        ...

    async def send_ping(self) -> None:
        """Send a ping and return; ``awaiting_pong`` stays true until its pong
        arrives (only if ``supports_ping``)."""
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
        # Made on the first client frame: most streams never send one, and an
        # empty deque still costs a 64-slot block.
        self._times: deque[float] | None = None

    def allow(self, now: float) -> bool:
        times = self._times
        if times is None:
            times = self._times = deque()
        while times and times[0] <= now - 1.0:
            times.popleft()
        if len(times) >= self._limit:
            return False
        times.append(now)
        return True


async def run_stream(
    transport: Transport,
    subscriber: Subscriber,
    hello: str,
    config: EventsConfig,
    *,
    replay: Sequence[str] = (),
) -> Verdict:
    """Serve one stream until it ends; close it; return why it closed."""
    verdict = Verdict()
    sending = True  # a sender task is running (the first one starts below)

    async with trio.open_nursery() as nursery:

        def finish(code: int | None, reason: str) -> None:
            if verdict.code is None and not nursery.cancel_scope.cancel_called:
                verdict.code, verdict.reason = code, reason
            nursery.cancel_scope.cancel()

        async def sender(first: bool) -> None:
            nonlocal sending
            try:
                if first:
                    await transport.send(hello)
                    for start in range(0, len(replay), MAX_BATCH):  # a resume's missed events
                        await transport.send_many(replay[start : start + MAX_BATCH])
                    # From now on the broker may write straight to the socket when
                    # nothing is queued (the transport decides whether it can).
                    if subscriber.close_code is None:
                        subscriber.direct = getattr(transport, "try_write_now", None)
                receive = subscriber.receive
                while True:
                    if subscriber.close_code in (CloseCode.SLOW_CONSUMER, CloseCode.SESSION_ENDED):
                        break  # stop at once; a resume will fetch the rest
                    frame = None
                    with trio.move_on_after(SENDER_IDLE):
                        frame = await receive.receive()
                    if frame is None:  # nothing to write for a while: this task ends
                        if receive.statistics().current_buffer_used:
                            continue  # (queued as the wait ended: not idle after all)
                        return  # the next frame the broker queues starts a sender again
                    # Coalesce: take whatever else is already queued (bounded,
                    # so one busy stream cannot hold the loop), write it at once.
                    batch = [frame]
                    while len(batch) < MAX_BATCH:
                        try:
                            batch.append(receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await transport.send_many(batch)
                    subscriber.written(len(batch))
            except trio.EndOfChannel:
                pass  # the subscription ended and everything queued is written
            except PeerClosed:
                finish(None, "connection lost")
                return
            finally:
                sending = False
            finish(subscriber.close_code or CloseCode.NORMAL, subscriber.close_reason)

        def wake() -> None:
            # The broker queued a frame (or ended the subscription): make sure
            # a sender runs.  An idle stream has none, only its reader.
            nonlocal sending
            if not sending and not nursery.cancel_scope.cancel_called:
                sending = True
                nursery.start_soon(sender, False)

        async def reader() -> None:
            """Client frames, and the heartbeat: a ping every heartbeat_interval;
            no pong within heartbeat_timeout closes with 1011."""
            window = _RateWindow(config.client_frame_rate)
            controls = 0  # control frames counted so far
            now = trio.current_time()
            ping_at = now + config.heartbeat_interval if transport.supports_ping else math.inf
            pong_by = math.inf
            while True:
                # While a pong is awaited, only its deadline counts (the next
                # ping waits for it); the transport also returns when it comes.
                deadline = pong_by if pong_by != math.inf else ping_at
                try:
                    message = await transport.receive(deadline)
                except PeerClosed:
                    finish(None, "closed by client")
                    return
                except MessageTooBig:
                    finish(CloseCode.TOO_BIG, "frame too big")
                    return
                while controls < transport.control_frames:
                    controls += 1
                    if not window.allow(trio.current_time()):
                        finish(CloseCode.POLICY, "too many frames")
                        return
                if message is None or pong_by != math.inf:
                    now = trio.current_time()
                    if pong_by != math.inf and not transport.awaiting_pong:
                        pong_by = math.inf  # answered
                    elif now >= pong_by:
                        finish(CloseCode.INTERNAL, "heartbeat timeout")
                        return
                    if now >= ping_at and pong_by == math.inf:
                        try:
                            await transport.send_ping()  # (may wait for a long write)
                        except PeerClosed:
                            finish(None, "connection lost")
                            return
                        ping_at = now + config.heartbeat_interval
                        # from when the ping is out: the peer cannot answer sooner
                        pong_by = trio.current_time() + config.heartbeat_timeout
                if message is None:
                    continue
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
                        await transport.send(pong)
                    except PeerClosed:
                        finish(None, "connection lost")
                        return

        def on_end() -> None:
            # Called by the broker as it ends the subscription: a slow or
            # revoked stream must close now, even if the sender is blocked
            # writing to a socket that does not drain; otherwise the sender
            # writes what is queued, then closes.
            if subscriber.close_code in (CloseCode.SLOW_CONSUMER, CloseCode.SESSION_ENDED):
                finish(subscriber.close_code, subscriber.close_reason)
            else:
                wake()

        nursery.start_soon(sender, True)
        nursery.start_soon(reader)
        subscriber.on_queue = wake
        subscriber.on_end = on_end  # (ended already? the sender sees it after Hello)

    subscriber.on_end = None
    subscriber.on_queue = None
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
