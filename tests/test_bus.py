"""The cluster bus and the broker rule it relies on.

The broker must route every committed event exactly once, in id order,
whatever the bus does: deliver twice, out of order, late, or never.  Here a
second store plays "another process": its commits reach the broker only
through ``notify_committed`` calls that the test makes in hostile orders.
The last tests run two real :class:`RedisBus` instances through Redis.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from trio_events.bus import RedisBus, decode_events, encode_events
from trio_events.config import BusConfig
from trio_events.events import is_internal
from trio_events.model import StoredEvent
from trio_events.services import Services
from trio_events.store import open_store

from .helpers import TEST_TIMEOUT, USER_PASSWORD, make_config
from .stream_helpers import drain, parse, running_services, wait_routed

REDIS_URL = os.environ.get("TRIO_EVENTS_TEST_REDIS", "redis://127.0.0.1:6379/0")


def event(event_id: int, audience: tuple[int, ...] | None = (1, 2)) -> StoredEvent:
    return StoredEvent(
        event_id=event_id,
        event_type="TextMessageDeleted",
        room_id=3,
        audience=audience,
        payload='{"messageId":1,"roomId":3,"text":"é"}',
        created_utc=1234,
    )


def test_messages_round_trip() -> None:
    events = [event(7), event(8, None)]
    origin, decoded = decode_events(encode_events("host:1:a", events))
    assert origin == "host:1:a"
    assert decoded == events


@pytest.mark.parametrize(
    "message",
    [b"", b"no newline", b"x\nnot json", b"x\n{}", b"x\n[[1]]", b'x\n[["a"]]', b"x\n[1]"],
)
def test_malformed_messages_raise_value_errors(message: bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError, IndexError)):
        decode_events(message)


async def test_routing_is_exact_whatever_order_the_bus_delivers(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    rng = random.Random(7)
    with trio.fail_after(TEST_TIMEOUT):
        async with running_services(config) as svc:
            alice = await svc.users.create_user(None, "alice", USER_PASSWORD)
            room = await svc.rooms.create(None, {"displayName": "r", "roomType": "Public"})
            await wait_routed(svc)
            # Slow the poll right down: only notify_committed (and the gap
            # reads it triggers) may deliver what the other "process" commits.
            svc.broker.poll_interval = 3600
            with svc.broker.subscribe(alice.user_id, 1) as inbox:
                mark = inbox.hello_event_id
                async with open_store(config) as other_store:
                    other = Services.build(config, other_store)
                    heard: list[StoredEvent] = []
                    other_store.add_commit_listener(heard.extend)
                    for i in range(30):
                        await other.messages.post(alice, room["roomId"], {"content": f"m{i}"})
                    log = await other_store.read(lambda tx: tx.events_after(0, 10_000))
                # The bus: duplicates, shuffled, and a third of it lost.
                deliveries = [e for e in heard if rng.random() > 0.33] + heard[::3]
                rng.shuffle(deliveries)
                for start in range(0, len(deliveries), 4):
                    svc.broker.notify_committed(deliveries[start : start + 4])
                    await trio.lowlevel.checkpoint()
                # Whatever arrived last, the broker fills the gaps from the log.
                svc.broker.notify_committed([heard[-1]])
                while svc.broker.last_event_id < log[-1].event_id:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                frames = [parse(f) for f in drain(inbox)]
    # Exactly the log's client events after the subscription, once each, in order.
    expected = [e.event_id for e in log if e.event_id > mark and not is_internal(e.event_type)]
    assert len(expected) == 60
    assert [f["eventId"] for f in frames] == expected


async def test_a_lost_bus_is_covered_by_the_fallback_poll(tmp_path: Path) -> None:
    """A bus that cannot reach Redis marks itself down and shortens the poll."""
    config = make_config(tmp_path)
    with trio.fail_after(TEST_TIMEOUT):
        async with running_services(config) as svc:
            bus = RedisBus(
                BusConfig(
                    backend="redis", url="redis://127.0.0.1:1/0", fallback_poll_interval=0.05
                ),
                svc.broker,
                svc.store,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(bus.run)
                assert bus.connected is False
                assert svc.broker.poll_interval == 0.05
                while bus.reconnects < 2:  # noqa: ASYNC110 (it keeps trying, with back-off)
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()


def redis_or_skip() -> None:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    except OSError as exc:
        message = f"Redis is not reachable at 127.0.0.1:6379 ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


async def test_two_buses_carry_each_others_commits_through_redis(tmp_path: Path) -> None:
    redis_or_skip()
    channel = f"trio_events_test_{os.getpid()}_{random.randrange(1 << 30)}"
    bus_config = BusConfig(backend="redis", url=REDIS_URL, channel=channel)
    config = make_config(tmp_path)
    with trio.fail_after(TEST_TIMEOUT):
        async with running_services(config) as here:
            alice = await here.users.create_user(None, "alice", USER_PASSWORD)
            async with (
                open_store(config) as other_store,
                trio.open_nursery() as nursery,
            ):
                there = Services.build(config, other_store)
                await nursery.start(there.broker.run)
                near = RedisBus(bus_config, here.broker, here.store)
                far = RedisBus(bus_config, there.broker, other_store)
                for bus in (near, far):
                    bus._normal_poll = 3600  # only the bus may deliver in time
                    await nursery.start(bus.run)
                while not (near.connected and far.connected):  # noqa: ASYNC110
                    await trio.sleep(0.01)
                there.broker.poll_interval = 3600
                await wait_routed(there)
                with there.broker.subscribe(alice.user_id, 1) as inbox:
                    room = await here.rooms.create(None, {"displayName": "r", "roomType": "Public"})
                    frame = parse(await inbox.receive.receive())
                    assert frame["type"] == "RoomCreated"
                    assert frame["data"]["room"]["roomId"] == room["roomId"]
                # The far side also heard it through Redis (the frame itself may
                # have come from the catch-up read its connecting triggered).
                while far.received < 1:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                while near.published < 1:  # noqa: ASYNC110 (counted after PUBLISH returns)
                    await trio.sleep(0.01)
                assert frame["eventId"] == here.broker.last_event_id
                nursery.cancel_scope.cancel()


async def test_since_from_a_process_that_is_ahead_is_reached_not_refused(tmp_path: Path) -> None:
    """A client saw event N on another process; this one has not routed N yet.
    The resume waits for this broker to read the log up to N instead of
    calling N "in the future"; only an id beyond the log is refused."""
    from trio_events.errors import BadRequest
    from trio_events.replay import checked_since

    config = make_config(tmp_path)
    with trio.fail_after(TEST_TIMEOUT):
        async with running_services(config) as svc:
            alice = await svc.users.create_user(None, "alice", USER_PASSWORD)
            room = await svc.rooms.create(None, {"displayName": "r", "roomType": "Public"})
            await wait_routed(svc)
            svc.broker.poll_interval = 3600  # only the resume may make it read the log
            async with open_store(config) as other_store:
                other = Services.build(config, other_store)
                await other.messages.post(alice, room["roomId"], {"content": "elsewhere"})
                ahead = await other_store.read(lambda tx: tx.latest_event_id())
            assert svc.broker.last_event_id < ahead
            assert await checked_since(svc, str(ahead)) == ahead
            assert svc.broker.last_event_id >= ahead
            with pytest.raises(BadRequest, match="in the future"):
                await checked_since(svc, str(ahead + 1))
