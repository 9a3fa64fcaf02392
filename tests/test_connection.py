"""``run_stream`` over an in-memory transport, in virtual time (``autojump_clock``).

The fake transport records what the stream sends, feeds it client frames
from a memory channel (closing the channel is the peer going away), answers
a given number of pings and can be told to block on a send forever, like a
socket whose peer stopped reading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, cast

import pytest
import trio
import trio.testing

from trio_events.broker import Broker, Subscriber
from trio_events.config import EventsConfig
from trio_events.connection import CLOSE_TIMEOUT, SENDER_IDLE, PeerClosed, Verdict, run_stream
from trio_events.model import StoredEvent

HELLO = '{"type":"Hello","data":{}}'
CONTROL = "\x00a WebSocket ping"  # what the fake peer sends to stand for one
CONFIG = EventsConfig(
    heartbeat_interval=20.0, heartbeat_timeout=10.0, max_client_frame=64, client_frame_rate=3
)


class FakeTransport:
    supports_ping = True
    awaiting_pong = False
    control_frames = 0

    def __init__(self, *, pongs: int = 1_000, block_after: int | None = None) -> None:
        self.sent: list[str] = []
        self.closed: list[tuple[int, str]] = []
        self.pings: list[float] = []
        self.pongs = pongs  # pings answered before the peer goes silent
        self.block_after = block_after  # sends that complete before one blocks forever
        self.close_raises = False
        self.client, self._incoming = trio.open_memory_channel[str | bytes](100)
        self._sent_send, self.sent_frames = trio.open_memory_channel[str](100)

    async def send(self, frame: str) -> None:
        if self.block_after is not None and len(self.sent) >= self.block_after:
            await trio.sleep_forever()
        self.sent.append(frame)
        self._sent_send.send_nowait(frame)

    async def send_many(self, frames: Sequence[str]) -> None:
        for frame in frames:
            await self.send(frame)

    async def receive(self, deadline: float = math.inf) -> str | bytes | None:
        with trio.move_on_at(deadline):
            try:
                message = await self._incoming.receive()
            except trio.EndOfChannel:
                raise PeerClosed from None
            if message != CONTROL:
                return message
            self.control_frames += 1  # and the real transport answers it later
        return None

    async def send_ping(self) -> None:
        self.pings.append(trio.current_time())
        # answered at once while the peer is alive, never once it is silent
        self.awaiting_pong = len(self.pings) > self.pongs

    async def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))
        if self.close_raises:
            raise PeerClosed


def subscriber(queue_size: int = 10) -> Subscriber:
    send, receive = trio.open_memory_channel[str](queue_size)
    return Subscriber(user_id=1, credential_id=1, send=send, receive=receive, hello_event_id=0)


async def run(transport: FakeTransport, sub: Subscriber, verdicts: list[Verdict]) -> None:
    verdicts.append(await run_stream(transport, sub, HELLO, CONFIG))


async def test_hello_first_then_frames_in_order_until_peer_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, sub, verdicts = FakeTransport(), subscriber(), list[Verdict]()
    for n in range(3):
        assert sub.offer(f"frame {n}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, transport, sub, verdicts)
        assert [await transport.sent_frames.receive() for _ in range(4)] == [
            HELLO,
            "frame 0",
            "frame 1",
            "frame 2",
        ]
        sub.offer("frame 3")
        assert await transport.sent_frames.receive() == "frame 3"
        await transport.client.aclose()  # the peer goes away
    assert verdicts == [Verdict(None, "closed by client")]
    assert transport.closed == []  # nothing to send to a closed peer


async def test_ping_answered_other_text_ignored(autojump_clock: trio.testing.MockClock) -> None:
    transport, sub, verdicts = FakeTransport(), subscriber(), list[Verdict]()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, transport, sub, verdicts)
        assert await transport.sent_frames.receive() == HELLO
        ignored_frames: list[str | bytes] = [
            "hello",
            "[1]",
            '{"type":"Pong"}',
            b'{"type":"Ping"}',
            "{",
        ]
        for ignored in ignored_frames:
            await transport.client.send(ignored)
            await trio.sleep(0.5)  # stay under three frames a second
        await transport.client.send('{"type":"Ping","data":{"a":1}}')
        pong = await transport.sent_frames.receive()
        assert json.loads(pong) == {"type": "Pong", "data": {"a": 1}}
        await transport.client.send('{"type": "Ping"}')
        assert json.loads(await transport.sent_frames.receive()) == {"type": "Pong", "data": None}
        await transport.client.aclose()
    assert transport.sent[0] == HELLO
    assert len(transport.sent) == 3
    assert verdicts[0].code is None


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("x" * 64, None),  # exactly the limit is fine
        ("x" * 65, 1009),
        ("é" * 33, 1009),  # bytes, not characters
        (b"x" * 65, 1009),
    ],
)
async def test_frame_size_limit(
    autojump_clock: trio.testing.MockClock, frame: str | bytes, code: int | None
) -> None:
    transport, sub = FakeTransport(), subscriber()
    await transport.client.send(frame)
    if code is None:
        await transport.client.aclose()
    verdict = await run_stream(transport, sub, HELLO, CONFIG)
    assert verdict.code == code
    assert transport.closed == ([] if code is None else [(code, "frame too big")])


async def test_frame_rate_limit(autojump_clock: trio.testing.MockClock) -> None:
    transport, sub, verdicts = FakeTransport(), subscriber(), list[Verdict]()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, transport, sub, verdicts)
        for _ in range(3):
            await transport.client.send("a")
        await trio.sleep(1.0)  # a new second: three more are allowed
        for _ in range(3):
            await transport.client.send("b")
        await trio.sleep(0.5)
        await transport.client.send("c")  # the fourth within one second
    assert verdicts == [Verdict(1008, "too many frames")]
    assert transport.closed == [(1008, "too many frames")]
    assert trio.current_time() - start == pytest.approx(1.5)


async def test_control_frames_count_against_the_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """WebSocket pings are client frames too (the rate is 3 a second here)."""
    transport, sub, verdicts = FakeTransport(), subscriber(), list[Verdict]()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, transport, sub, verdicts)
        for _ in range(3):
            await transport.client.send(CONTROL)
        await trio.sleep(1.0)
        for frame in (CONTROL, "text", CONTROL):
            await transport.client.send(frame)
        await trio.sleep(0.5)
        assert verdicts == []
        await transport.client.send(CONTROL)  # the fourth within one second
    assert verdicts == [Verdict(1008, "too many frames")]
    assert transport.closed == [(1008, "too many frames")]


async def test_heartbeat_pings_and_times_out(autojump_clock: trio.testing.MockClock) -> None:
    transport, sub = FakeTransport(pongs=3), subscriber()
    start = trio.current_time()
    verdict = await run_stream(transport, sub, HELLO, CONFIG)
    assert verdict == Verdict(1011, "heartbeat timeout")
    assert [t - start for t in transport.pings] == [20.0, 40.0, 60.0, 80.0]
    assert trio.current_time() - start == 90.0  # the fourth ping's timeout
    assert transport.closed == [(1011, "heartbeat timeout")]


async def test_no_pings_when_the_transport_cannot(autojump_clock: trio.testing.MockClock) -> None:
    transport, sub = FakeTransport(pongs=0), subscriber()
    transport.supports_ping = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_stream, transport, sub, HELLO, CONFIG)
        await trio.sleep(1000)
        await transport.client.aclose()
    assert transport.pings == []


@pytest.mark.parametrize(("code", "reason"), [(4008, "slow consumer"), (4001, "session ended")])
async def test_broker_end_interrupts_a_blocked_send(
    autojump_clock: trio.testing.MockClock, code: int, reason: str
) -> None:
    transport, sub, verdicts = FakeTransport(block_after=2), subscriber(), list[Verdict]()
    for n in range(5):
        sub.offer(f"frame {n}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, transport, sub, verdicts)
        await trio.sleep(7)  # the sender is stuck on "frame 1"
        assert transport.sent == [HELLO, "frame 0"]
        start = trio.current_time()
        sub.end(code, reason)
    assert trio.current_time() == start  # at once, not at a timeout
    assert verdicts == [Verdict(code, reason)]
    assert transport.closed == [(code, reason)]
    assert transport.sent == [HELLO, "frame 0"]


async def test_session_end_sends_nothing_more(autojump_clock: trio.testing.MockClock) -> None:
    transport, sub = FakeTransport(), subscriber()
    for n in range(3):
        sub.offer(f"frame {n}")
    sub.end(4001, "session ended")
    verdict = await run_stream(transport, sub, HELLO, CONFIG)
    assert verdict.code == 4001
    assert transport.sent == [HELLO]
    assert transport.closed == [(4001, "session ended")]


async def test_shutdown_drains_the_queue_then_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, sub, verdicts = FakeTransport(), subscriber(), list[Verdict]()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, transport, sub, verdicts)
        assert await transport.sent_frames.receive() == HELLO
        for n in range(4):
            sub.offer(f"frame {n}")
        sub.end(1001, "server shutting down")
        assert not sub.offer("too late")
    assert transport.sent == [HELLO, "frame 0", "frame 1", "frame 2", "frame 3"]
    assert verdicts == [Verdict(1001, "server shutting down")]
    assert transport.closed == [(1001, "server shutting down")]


async def test_close_is_bounded_and_peer_errors_swallowed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class StuckClose(FakeTransport):
        async def close(self, code: int, reason: str) -> None:
            await trio.sleep_forever()

    stuck, sub = StuckClose(), subscriber()
    sub.end(1001, "bye")
    start = trio.current_time()
    assert (await run_stream(stuck, sub, HELLO, CONFIG)).code == 1001
    assert trio.current_time() - start == CLOSE_TIMEOUT

    broken, sub = FakeTransport(), subscriber()
    broken.close_raises = True
    sub.end(1001, "bye")
    assert (await run_stream(broken, sub, HELLO, CONFIG)).code == 1001
    assert broken.closed == [(1001, "bye")]


async def test_outer_cancel_leaves_nothing_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport, sub = FakeTransport(), subscriber()
    start = trio.current_time()
    with trio.move_on_after(30) as scope:
        await run_stream(transport, sub, HELLO, CONFIG)
    assert scope.cancelled_caught
    assert [t - start for t in transport.pings] == [20.0]
    assert transport.closed == []  # cancelled from outside: no verdict, no close frame
    await trio.sleep(100)
    assert len(transport.pings) == 1  # the heartbeat did not outlive run_stream


def living_tasks() -> int:
    return trio.lowlevel.current_statistics().tasks_living


async def test_an_idle_stream_is_one_task_and_its_sender_comes_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The sender ends after SENDER_IDLE seconds with nothing to write; a
    frame queued later starts it again, and order is kept."""
    transport, sub, verdicts = FakeTransport(), subscriber(), list[Verdict]()
    before = living_tasks()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, transport, sub, verdicts)
        assert await transport.sent_frames.receive() == HELLO
        assert living_tasks() == before + 3  # run, reader, the first sender
        await trio.sleep(SENDER_IDLE + 0.1)
        assert living_tasks() == before + 2  # run and its reader: the idle stream
        for n in range(3):
            assert sub.offer(f"frame {n}")  # queued: this fake has no direct path
        assert [await transport.sent_frames.receive() for _ in range(3)] == [
            "frame 0",
            "frame 1",
            "frame 2",
        ]
        assert sub.outstanding == 0
        await trio.sleep(SENDER_IDLE + 0.1)
        assert living_tasks() == before + 2
        sub.end(1001, "server shutting down")  # no sender running: the end starts one
    assert verdicts == [Verdict(1001, "server shutting down")]
    assert transport.closed == [(1001, "server shutting down")]


async def test_a_frame_queued_as_the_sender_gives_up_is_still_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The frame lands in the queue in the same instant the idle wait ends:
    the sender must not leave it behind (nor may two senders run)."""
    transport, sub, verdicts = FakeTransport(), subscriber(), list[Verdict]()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, transport, sub, verdicts)
        assert await transport.sent_frames.receive() == HELLO
        # wake up exactly when the sender's idle wait expires, and queue then
        await trio.sleep_until(trio.current_time() + SENDER_IDLE)
        assert sub.offer("on the edge")
        assert await transport.sent_frames.receive() == "on the edge"
        await transport.client.aclose()
    assert transport.sent == [HELLO, "on the edge"]


class LatePongs(FakeTransport):
    """Every pong arrives ``delay`` seconds after its ping (later than the next
    ping would be due), as the transport reports it: receive returns None."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.receives = 0
        self._pong_at = math.inf

    async def send_ping(self) -> None:
        self.pings.append(trio.current_time())
        self.awaiting_pong = True
        self._pong_at = trio.current_time() + self.delay

    async def receive(self, deadline: float = math.inf) -> str | bytes | None:
        self.receives += 1
        assert self.receives < 1000, "the reader spins instead of waiting"
        with trio.move_on_at(min(deadline, self._pong_at)):
            try:
                return await self._incoming.receive()
            except trio.EndOfChannel:
                raise PeerClosed from None
        if trio.current_time() >= self._pong_at:
            self.awaiting_pong, self._pong_at = False, math.inf
        return None


async def test_a_pong_later_than_the_next_ping_is_waited_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """heartbeat_interval 20 s, timeout 10 s, pongs after 25 s: the stream must
    wait for each pong (no busy loop, no second ping outstanding) and close
    with 1011 at the first ping's timeout; with pongs after 5 s it lives on."""
    late = LatePongs(delay=25.0)
    start = trio.current_time()
    verdict = await run_stream(late, subscriber(), HELLO, CONFIG)
    assert verdict == Verdict(1011, "heartbeat timeout")
    assert [t - start for t in late.pings] == [20.0]
    assert trio.current_time() - start == 30.0

    slow = LatePongs(delay=5.0)
    start = trio.current_time()
    with trio.move_on_after(100):
        await run_stream(slow, subscriber(), HELLO, CONFIG)
    assert [t - start for t in slow.pings] == [20.0, 40.0, 60.0, 80.0]  # every interval
    assert slow.receives < 50


async def test_a_timeout_longer_than_the_interval_does_not_spin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """heartbeat_timeout 10 s > heartbeat_interval 5 s, pongs after 7 s: the
    next ping is due before the pong arrives; the reader waits for the pong
    (one ping outstanding at a time) instead of spinning on a past deadline."""
    config = EventsConfig(
        heartbeat_interval=5.0, heartbeat_timeout=10.0, max_client_frame=64, client_frame_rate=3
    )
    late = LatePongs(delay=7.0)
    start = trio.current_time()
    with trio.move_on_after(30):
        await run_stream(late, subscriber(), HELLO, config)
    assert [t - start for t in late.pings] == [5.0, 12.0, 19.0, 26.0]  # each after its pong
    assert late.receives < 50


def message_event(event_id: int, room_id: int) -> StoredEvent:
    payload = json.dumps({"messages": [{"messageId": event_id, "roomId": room_id}]})
    return StoredEvent(event_id, "TextMessagesCreated", room_id, None, payload, 0)


def public_room_with(room_id: int, *user_ids: int) -> Broker:
    """A broker whose access table has ``room_id`` Public and the users active
    (no store: its routing is synchronous and needs none)."""
    broker = Broker(cast(Any, None), queue_size=2)
    setup = [
        StoredEvent(n + 1, "acl.user", None, None, json.dumps(user), 0)
        for n, user in enumerate({"userId": u, "isAdmin": False, "active": True} for u in user_ids)
    ]
    room = json.dumps({"roomId": room_id, "roomType": "Public", "previousType": None})
    broker.route_many([*setup, StoredEvent(len(setup) + 1, "acl.room", room_id, None, room, 0)])
    return broker


async def test_full_queue_closes_4008_through_the_broker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that stops reading: its socket takes Hello and one frame, its
    queue two more, and the next routed event finds the queue full; the broker
    ends that stream (4008) at once and the other stream gets everything."""
    broker = public_room_with(9, 1, 2)
    stalled, reading = FakeTransport(block_after=2), FakeTransport()
    slow_verdicts, fast_verdicts = list[Verdict](), list[Verdict]()
    closed_at: list[float] = []

    async def run_slow() -> None:
        await run(stalled, slow, slow_verdicts)
        closed_at.append(trio.current_time())

    with broker.subscribe(1, 1) as slow, broker.subscribe(2, 2) as fast:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_slow)
            nursery.start_soon(run, reading, fast, fast_verdicts)
            first = broker.last_event_id + 1
            for event_id in range(first, first + 4):
                broker.route(message_event(event_id, 9))
                await trio.sleep(1)
            assert slow.close_code is None
            assert slow.queued == 2  # frames 3 and 4; the sender is stuck on frame 2
            assert len(stalled.sent) == 2
            routed_at = trio.current_time()
            broker.route(message_event(first + 4, 9))  # no room left in the queue
            assert slow.close_code == 4008
            await trio.sleep(1)
            assert slow_verdicts == [Verdict(4008, "slow consumer")]
            assert closed_at == [routed_at]  # at once, not at a timeout
            assert stalled.closed == [(4008, "slow consumer")]
            assert broker.statistics().drops == 1
            assert fast.close_code is None
            assert [json.loads(f)["eventId"] for f in reading.sent[1:]] == list(
                range(first, first + 5)
            )
            await reading.client.aclose()
    assert fast_verdicts == [Verdict(None, "closed by client")]
    assert broker.statistics().subscribers == 0
