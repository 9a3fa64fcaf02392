"""The broker over a real SQLite store, driven through the services (no sockets).

Subscribers are the broker's own inboxes; each test writes through the
services, waits until the broker has routed what the log holds and then
reads the queued frames with ``receive_nowait``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import trio

from trio_events.events import client_data, is_internal
from trio_events.model import User
from trio_events.services import Services
from trio_events.store import open_store

from .helpers import TEST_TIMEOUT, USER_PASSWORD, make_config
from .stream_helpers import (
    assert_increasing,
    drain,
    latest,
    parse,
    running_services,
    summary,
    wait_routed,
)

CREATED, UPDATED = "TextMessagesCreated", "RoomUpdated"


async def users(svc: Services, *names: str) -> list[User]:
    return [await svc.users.create_user(None, name, USER_PASSWORD) for name in names]


async def room(svc: Services, name: str, room_type: str, members: Sequence[User] = ()) -> int:
    body = {"displayName": name, "roomType": room_type, "memberIds": [m.user_id for m in members]}
    room_id = (await svc.rooms.create(None, body))["roomId"]
    assert isinstance(room_id, int)
    return room_id


async def post(svc: Services, user: User, room_id: int, *contents: str) -> list[int]:
    body = {"messages": [{"content": c} for c in contents]} if contents else {"content": "x"}
    return await svc.messages.post(user, room_id, body)


async def test_frames_exact_and_in_order(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_services(make_config(tmp_path)) as svc:
            admin = await svc.users.create_user(None, "admin", USER_PASSWORD, None, True)
            alice, bob = await users(svc, "alice", "bob")
            await wait_routed(svc)
            mark = await latest(svc)
            with (
                svc.broker.subscribe(admin.user_id, 1) as to_admin,
                svc.broker.subscribe(alice.user_id, 2) as to_alice,
                svc.broker.subscribe(bob.user_id, 3) as to_bob,
            ):
                assert to_alice.hello_event_id == mark
                public = await room(svc, "public", "Public")
                private = await room(svc, "private", "Private", [alice])
                await post(svc, alice, public)
                await post(svc, alice, private, "a", "b")
                await post(svc, bob, public)
                await wait_routed(svc)
                received = {
                    user.user_id: [parse(f) for f in drain(sub)]
                    for user, sub in ((admin, to_admin), (alice, to_alice), (bob, to_bob))
                }
            log = await svc.store.read(lambda tx: tx.events_after(mark, 1000))
    both = [("RoomCreated", public)]
    public_post = [(CREATED, public), (UPDATED, public)]
    private_all = [("RoomCreated", private), (CREATED, private), (UPDATED, private)]
    expected_admin = both + private_all[:1] + public_post + private_all[1:] + public_post
    assert summary(received[admin.user_id]) == expected_admin
    assert summary(received[alice.user_id]) == expected_admin
    assert summary(received[bob.user_id]) == both + public_post + public_post
    by_id = {e.event_id: e for e in log if not is_internal(e.event_type)}
    for user_id, frames in received.items():
        assert_increasing(frames)
        for frame in frames:
            stored = by_id[frame["eventId"]]
            assert frame["type"] == stored.event_type
            assert frame["data"] == client_data(stored, user_id)
    batch = [f for f in received[alice.user_id] if f["type"] == CREATED][1]
    assert [m["text"] for m in batch["data"]["messages"]] == ["a", "b"]
    rooms = [f["data"]["room"] for f in received[bob.user_id] if f["type"] == UPDATED]
    assert [r["unreadMessageCount"] for r in rooms] == [1, 1]  # his own post counts as read


async def test_full_queue_closes_only_that_subscriber(tmp_path: Path) -> None:
    config = make_config(tmp_path, events={"send_queue_size": 2})
    with trio.fail_after(TEST_TIMEOUT):
        async with running_services(config) as svc:
            alice, bob = await users(svc, "alice", "bob")
            public = await room(svc, "public", "Public")
            await wait_routed(svc)
            kept: list[str] = []
            with (
                svc.broker.subscribe(alice.user_id, 1) as slow,
                svc.broker.subscribe(bob.user_id, 2) as fast,
            ):
                for _ in range(5):
                    await post(svc, alice, public)  # two frames each
                    await wait_routed(svc)
                    kept.extend(drain(fast))
                assert slow.close_code == 4008
                assert slow.ended.is_set()
                assert fast.close_code is None
                assert svc.broker.statistics().drops == 1
                assert len(drain(slow)) == 2  # what was queued stays readable
                assert svc.broker.statistics().subscribers == 2
            assert svc.broker.statistics().subscribers == 0
    assert summary([parse(f) for f in kept]) == [(CREATED, public), (UPDATED, public)] * 5


async def test_each_payload_is_encoded_once(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_services(make_config(tmp_path)) as svc:
            alice, bob, carol = await users(svc, "alice", "bob", "carol")
            public = await room(svc, "public", "Public")
            await wait_routed(svc)
            with (
                svc.broker.subscribe(alice.user_id, 1) as alice_1,
                svc.broker.subscribe(alice.user_id, 2) as alice_2,
                svc.broker.subscribe(bob.user_id, 3) as to_bob,
                svc.broker.subscribe(carol.user_id, 4) as to_carol,
            ):
                await post(svc, alice, public)
                await wait_routed(svc)
                (a_msg, a_room), (a2_msg, a2_room) = drain(alice_1), drain(alice_2)
                (b_msg, b_room), (c_msg, c_room) = drain(to_bob), drain(to_carol)
    assert a_msg is b_msg
    assert a_msg is c_msg
    assert a_msg is a2_msg
    assert b_room is c_room  # the same rendering: one string
    assert a_room is a2_room
    assert a_room != b_room  # alice wrote it, bob has one unread
    assert parse(b_room)["data"]["room"]["unreadMessageCount"] == 1


async def test_logout_ends_only_that_session(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_services(make_config(tmp_path)) as svc:
            (alice,) = await users(svc, "alice")
            public = await room(svc, "public", "Public")
            _, first = await svc.auth.login("alice", USER_PASSWORD, "test")
            _, second = await svc.auth.login("alice", USER_PASSWORD, "test")
            first_id = (await svc.auth.authenticate(None, first)).credential.credential_id
            second_id = (await svc.auth.authenticate(None, second)).credential.credential_id
            await wait_routed(svc)
            with (
                svc.broker.subscribe(alice.user_id, first_id) as ending,
                svc.broker.subscribe(alice.user_id, second_id) as staying,
            ):
                assert await svc.auth.logout(first) == [first_id]
                await wait_routed(svc)
                assert ending.close_code == 4001
                assert staying.close_code is None
                await post(svc, alice, public)
                await wait_routed(svc)
                assert drain(ending) == []
                assert len(drain(staying)) == 2


async def test_suspension_ends_every_stream_of_that_user(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_services(make_config(tmp_path)) as svc:
            alice, bob = await users(svc, "alice", "bob")
            await wait_routed(svc)
            with (
                svc.broker.subscribe(alice.user_id, 1) as alice_1,
                svc.broker.subscribe(alice.user_id, 2) as alice_2,
                svc.broker.subscribe(bob.user_id, 3) as to_bob,
            ):
                await svc.users.update_user(None, alice.user_id, {"status": "Suspended"})
                await wait_routed(svc)
                assert (alice_1.close_code, alice_2.close_code) == (4001, 4001)
                assert to_bob.close_code is None
                public = await room(svc, "public", "Public")
                await wait_routed(svc)
                assert drain(alice_1) == []
                assert summary([parse(f) for f in drain(to_bob)]) == [("RoomCreated", public)]


async def test_commits_of_another_process_arrive_by_polling(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with trio.fail_after(TEST_TIMEOUT):
        async with running_services(config) as svc:
            (alice,) = await users(svc, "alice")
            public = await room(svc, "public", "Public")
            await wait_routed(svc)
            with svc.broker.subscribe(alice.user_id, 1) as inbox:
                async with open_store(config) as other_store:
                    other = Services.build(config, other_store)
                    await post(other, alice, public)
                    target = await latest(other)
                    assert svc.broker.last_event_id < target  # no commit listener saw it
                    with trio.fail_after(5):  # the poll runs every second
                        frames = [parse(await inbox.receive.receive()) for _ in range(2)]
                assert summary(frames) == [(CREATED, public), (UPDATED, public)]
                assert frames[-1]["eventId"] == target


async def test_subscriptions_unregister(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_services(make_config(tmp_path)) as svc:
            broker = svc.broker
            with broker.subscribe(7, 1) as inbox, broker.subscribe(7, 2):
                assert broker.count_streams(7) == 2
                assert broker.statistics().subscribers == 2
            assert broker.statistics().subscribers == 0
            assert broker.count_streams(7) == 0
            with (
                contextlib.suppress(RuntimeError),
                broker.subscribe(8, 1),
            ):
                raise RuntimeError("the stream failed")
            assert broker.statistics().subscribers == 0
            assert inbox.receive.statistics().open_receive_channels == 0
            broker.close_all(1001, "bye")
            with broker.subscribe(9, 1) as late:
                assert late.close_code == 1001
                assert late.ended.is_set()
