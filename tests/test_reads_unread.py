"""Read receipts and per-user unread counts (API.md 4 and 5)."""

from __future__ import annotations

import random

import httpx
import trio

import trio_events

from .helpers import assert_error
from .rest_helpers import (
    Actor,
    admin_actor,
    comment,
    comments,
    create_room,
    delete_message,
    events_after,
    history,
    latest_event_id,
    mark_read,
    message_by_id,
    post,
    post_batch,
    readers,
    room_of,
    rooms_by_id,
    shape,
    user_actors,
)

TIMEOUT = 60


async def test_read_is_recorded_once(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        alice, bob = await user_actors(client, server, "alice", "bob")
        room_id = await create_room(client, admin, "r", "Public")
        message_id = await post(client, alice, room_id)
        created = await message_by_id(client, bob, room_id, message_id)
        assert readers(created) == [alice.user_id]  # the author's read comes with the post
        assert created["readTimestamps"][0]["readUtc"] == created["createdUtc"]
        assert (await room_of(client, alice, room_id))["unreadMessageCount"] == 0
        assert (await room_of(client, bob, room_id))["unreadMessageCount"] == 1

        mark = await latest_event_id(server)
        await mark_read(client, bob, message_id)
        first = await events_after(server, mark)
        once = await message_by_id(client, bob, room_id, message_id)
        await mark_read(client, bob, message_id)
        await mark_read(client, alice, message_id)  # the author has read it already
        assert await events_after(server, mark) == first
        twice = await message_by_id(client, bob, room_id, message_id)
        assert_error(await client.post("/api/v1/messages/999999/read", headers=bob.headers), 404)
        assert await events_after(server, mark) == first
        assert (await room_of(client, bob, room_id))["unreadMessageCount"] == 0
    assert readers(once) == [alice.user_id, bob.user_id]
    assert twice == once
    assert shape(first) == [
        ("TextMessagesUpdated", room_id, None),
        ("RoomUpdated", room_id, (bob.user_id,)),
    ]


async def test_reading_a_comment_leaves_unread_count_alone(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        alice, bob = await user_actors(client, server, "alice", "bob")
        room_id = await create_room(client, admin, "r", "Public")
        parent = await post(client, alice, room_id)
        reply = await comment(client, alice, parent)
        await mark_read(client, bob, reply)
        assert readers(await message_by_id(client, bob, room_id, reply)) == [
            alice.user_id,
            bob.user_id,
        ]
        assert (await room_of(client, bob, room_id))["unreadMessageCount"] == 1
        await mark_read(client, bob, parent)
        assert (await room_of(client, bob, room_id))["unreadMessageCount"] == 0


async def brute_force_unread(
    client: httpx.AsyncClient, viewer: Actor, room_id: int, users: list[Actor]
) -> dict[int, int]:
    messages = await history(client, viewer, room_id)
    return {
        user.user_id: sum(user.user_id not in readers(message) for message in messages)
        for user in users
    }


async def reported_unread(
    client: httpx.AsyncClient, room_id: int, users: list[Actor]
) -> dict[int, int]:
    return {
        user.user_id: (await rooms_by_id(client, user))[room_id]["unreadMessageCount"]
        for user in users
    }


async def alive(
    client: httpx.AsyncClient, viewer: Actor, room_id: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(message id, author) of the room's top-level messages and of their comments."""
    listed = await history(client, viewer, room_id)
    below: list[tuple[int, int]] = []
    for message in listed:
        if message["commentCount"]:
            replies = await comments(client, viewer, message["messageId"])
            below += [(c["messageId"], c["userId"]) for c in replies]
    return [(m["messageId"], m["userId"]) for m in listed], below


async def test_unread_counts_match_brute_force_after_random_activity(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    rng = random.Random(20240611)
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        users = [admin, *await user_actors(client, server, "ann", "ben", "cid")]
        rooms = [
            await create_room(client, admin, "open", "Public"),
            await create_room(client, admin, "closed", "Private", users[1:]),
        ]
        top: dict[int, list[tuple[int, int]]] = {room_id: [] for room_id in rooms}
        replies: dict[int, list[tuple[int, int]]] = {room_id: [] for room_id in rooms}
        for step in range(160):
            room_id = rng.choice(rooms)
            actor = rng.choice(users)
            action = rng.random()
            if action < 0.25 or not top[room_id]:
                if rng.random() < 0.3:
                    new = await post_batch(client, actor, room_id, ["b"] * rng.randint(2, 5))
                else:
                    new = [await post(client, actor, room_id, f"s{step}")]
                top[room_id] += [(m, actor.user_id) for m in new]
            elif action < 0.65:
                message_id, _ = rng.choice(top[room_id] + replies[room_id])
                await mark_read(client, actor, message_id)
            elif action < 0.8:
                parent, _ = rng.choice(top[room_id])
                replies[room_id].append((await comment(client, actor, parent), actor.user_id))
            else:
                pool = top[room_id] + replies[room_id]
                message_id, author = rng.choice(pool)
                await delete_message(
                    client, admin if author != actor.user_id else actor, message_id
                )
                top[room_id], replies[room_id] = await alive(client, admin, room_id)
            if step % 20 == 19:
                for checked in rooms:
                    expected = await brute_force_unread(client, admin, checked, users)
                    assert await reported_unread(client, checked, users) == expected, step
        for room_id in rooms:
            expected = await brute_force_unread(client, admin, room_id, users)
            assert await reported_unread(client, room_id, users) == expected
            assert len(await history(client, admin, room_id)) == len(top[room_id])
