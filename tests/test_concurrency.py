"""Several clients writing at once: ids, counters and the log stay consistent."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio

import trio_events

from .rest_helpers import (
    Actor,
    Json,
    admin_actor,
    body_of,
    comment,
    comments,
    create_room,
    events_after,
    history,
    mark_read,
    post,
    post_batch,
    readers,
    rooms_by_id,
    user_actors,
)

TIMEOUT = 60
POSTS_PER_USER = 40
STEPS_PER_USER = 50


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


def _brute_force(path: Path, room_ids: list[int], user_ids: list[int]) -> Json:
    """Comment and unread counts computed from the rows themselves."""
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        comment_counts = {
            message_id: (stored, counted)
            for message_id, stored, counted in db.execute(
                "SELECT m.message_id, m.comment_count,"
                " (SELECT COUNT(*) FROM messages c WHERE c.parent_message_id = m.message_id)"
                " FROM messages m WHERE m.parent_message_id = 0"
            )
        }
        unread = {
            (room_id, user_id): db.execute(
                "SELECT COUNT(*) FROM messages m WHERE m.room_id = ? AND m.parent_message_id = 0"
                " AND NOT EXISTS (SELECT 1 FROM message_reads r"
                " WHERE r.message_id = m.message_id AND r.user_id = ?)",
                (room_id, user_id),
            ).fetchone()[0]
            for room_id in room_ids
            for user_id in user_ids
        }
        (orphans,) = db.execute(
            "SELECT COUNT(*) FROM messages c WHERE c.parent_message_id != 0 AND NOT EXISTS"
            " (SELECT 1 FROM messages p WHERE p.message_id = c.parent_message_id)"
        ).fetchone()
        (stray_reads,) = db.execute(
            "SELECT COUNT(*) FROM message_reads r WHERE NOT EXISTS"
            " (SELECT 1 FROM messages m WHERE m.message_id = r.message_id)"
        ).fetchone()
        return {
            "comments": comment_counts,
            "unread": unread,
            "orphans": orphans,
            "stray_reads": stray_reads,
        }
    finally:
        db.close()


async def test_concurrent_deletes_keep_comment_and_unread_counts_exact(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    """Posts, comments, reads and deletes (of messages and comments, by authors
    and by a moderator) at once; then every counter equals a brute-force count
    over the database's rows, and the API reports the same."""
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        users = await user_actors(client, server, "ann", "ben", "cid", "mod")
        mod = users[-1]
        rooms = [
            await create_room(client, admin, "open", "Public", moderators=[mod]),
            await create_room(client, admin, "closed", "Private", users, [mod]),
        ]
        for room_id in rooms:
            await post_batch(client, admin, room_id, [f"seed {n}" for n in range(10)])
        done = Counter[str]()

        async def attempt(response: httpx.Response, what: str) -> None:
            # The target may have been deleted by another client meanwhile.
            if response.status_code == 404:
                done[f"{what} (raced)"] += 1
            else:
                body_of(response)
                done[what] += 1

        async def chatter(actor: Actor, seed: int) -> None:
            rng = random.Random(seed)
            async with httpx.AsyncClient(base_url=server.url) as own:
                for step in range(STEPS_PER_USER):
                    room_id = rng.choice(rooms)
                    page = await history(own, actor, room_id, direction="backward", limit=15)
                    action = rng.random()
                    if action < 0.15 or not page:
                        await post(own, actor, room_id, f"{seed}/{step}")
                        continue
                    target = rng.choice(page)
                    url = f"/api/v1/messages/{target['messageId']}"
                    if action < 0.35:
                        await attempt(await own.post(f"{url}/read", headers=actor.headers), "read")
                    elif action < 0.55 or (action < 0.85 and not target["commentCount"]):
                        response = await own.post(
                            f"{url}/comments", json={"content": "re"}, headers=actor.headers
                        )
                        await attempt(response, "comment")
                    elif action < 0.85:
                        response = await own.get(f"{url}/comments", headers=actor.headers)
                        if response.status_code == 404:
                            done["list (raced)"] += 1
                            continue
                        replies = body_of(response)["messages"] or [target]
                        mine = [r for r in replies if r["userId"] == actor.user_id]
                        if actor is mod or mine:
                            reply_url = (
                                f"/api/v1/messages/{rng.choice(mine or replies)['messageId']}"
                            )
                            response = await own.delete(reply_url, headers=actor.headers)
                            await attempt(response, "delete comment")
                        else:
                            reply_url = f"/api/v1/messages/{rng.choice(replies)['messageId']}"
                            response = await own.post(f"{reply_url}/read", headers=actor.headers)
                            await attempt(response, "read comment")
                    elif actor is mod or target["userId"] == actor.user_id:
                        await attempt(await own.delete(url, headers=actor.headers), "delete")
                    else:
                        await post(own, actor, room_id, f"{seed}/{step}")

        async with trio.open_nursery() as nursery:
            for seed, actor in enumerate(users):
                nursery.start_soon(chatter, actor, seed)

        everyone = [admin, *users]
        counted = await trio.to_thread.run_sync(
            _brute_force,
            server.services.config.sqlite_path,
            rooms,
            [u.user_id for u in everyone],
        )
        reported_unread = {}
        for user in everyone:
            listed = await rooms_by_id(client, user)
            for room_id in rooms:
                reported_unread[(room_id, user.user_id)] = listed[room_id]["unreadMessageCount"]
        reported_comments = {
            m["messageId"]: m["commentCount"]
            for room_id in rooms
            for m in await history(client, admin, room_id)
        }
    assert counted["orphans"] == 0
    assert counted["stray_reads"] == 0
    assert {m: stored for m, (stored, _) in counted["comments"].items()} == {
        m: brute for m, (_, brute) in counted["comments"].items()
    }
    assert reported_comments == {m: brute for m, (_, brute) in counted["comments"].items()}
    assert reported_unread == counted["unread"]
    assert any(n for n in reported_unread.values())  # the check had something to count
    assert min(done[kind] for kind in ("read", "comment", "delete", "delete comment")) > 0, done
    assert sum(brute for _, brute in counted["comments"].values()) > 0
