"""Several clients writing at once: ids, counters and the log stay consistent."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import httpx
import trio

import trio_events

from .rest_helpers import (
    Actor,
    admin_actor,
    comment,
    comments,
    create_room,
    events_after,
    history,
    mark_read,
    post,
    readers,
    rooms_by_id,
    user_actors,
)

TIMEOUT = 60
POSTS_PER_USER = 40


async def test_concurrent_posts_reads_and_comments(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        users = await user_actors(client, server, "ann", "ben", "cid")
        rooms = [
            await create_room(client, admin, "open", "Public"),
            await create_room(client, admin, "closed", "Private", users),
        ]
        mark = (await events_after(server, 0))[-1].event_id
        posted: dict[int, list[int]] = {u.user_id: [] for u in users}
        commented: Counter[int] = Counter()

        async def chatter(actor: Actor, seed: int) -> None:
            rng = random.Random(seed)
            async with httpx.AsyncClient(base_url=server.url) as own:
                for n in range(POSTS_PER_USER):
                    room_id = rng.choice(rooms)
                    posted[actor.user_id].append(await post(own, actor, room_id, f"{seed}/{n}"))
                    page = await history(own, actor, room_id, direction="backward", limit=10)
                    target = rng.choice(page)["messageId"]
                    await mark_read(own, actor, target)
                    if rng.random() < 0.4:
                        await comment(own, actor, target)
                        commented[target] += 1

        async with trio.open_nursery() as nursery:
            for seed, actor in enumerate(users):
                nursery.start_soon(chatter, actor, seed)

        everyone = [admin, *users]
        all_ids = [m for ids in posted.values() for m in ids]
        assert len(set(all_ids)) == len(users) * POSTS_PER_USER
        for ids in posted.values():
            assert ids == sorted(ids)  # one client's posts commit in its order
        listed: dict[int, list[dict[str, Any]]] = {}
        for room_id in rooms:
            listed[room_id] = await history(client, admin, room_id)
            ids = [m["messageId"] for m in listed[room_id]]
            assert ids == sorted(set(ids))
        assert sorted(m["messageId"] for ms in listed.values() for m in ms) == sorted(all_ids)
        for messages in listed.values():
            for message in messages:
                message_id = message["messageId"]
                assert isinstance(message_id, int)
                assert message["commentCount"] == commented[message_id]
                if commented[message_id]:
                    replies = await comments(client, admin, message_id)
                    assert len(replies) == commented[message_id]
        for room_id in rooms:
            for user in everyone:
                expected = sum(user.user_id not in readers(m) for m in listed[room_id])
                reported = (await rooms_by_id(client, user))[room_id]["unreadMessageCount"]
                assert reported == expected, (room_id, user.user_id)

        log = await events_after(server, mark)
    event_ids = [e.event_id for e in log]
    assert event_ids == sorted(set(event_ids))
    created = [
        m["messageId"]
        for e in log
        if e.event_type == "TextMessagesCreated"
        for m in json.loads(e.payload)["messages"]
    ]
    assert created == sorted(created)  # the log is in commit order
    assert len(created) == len(all_ids) + sum(commented.values())
