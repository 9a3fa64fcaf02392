"""Messages and comments through the real server: paging, posting, editing (API.md 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import trio_events
from trio_events.services.validate import MAX_ID

from .helpers import assert_error, make_config, serving
from .rest_helpers import (
    MESSAGE_FIELDS,
    Actor,
    Json,
    admin_actor,
    body_of,
    comment,
    comments,
    create_room,
    delete_message,
    history,
    message_by_id,
    post,
    post_batch,
    snapshot,
    user_actors,
)

TIMEOUT = 60
MAX_PAGE = 50
CURSOR_TEXT = f"Query parameter 'cursor' must be -1 or a message id (an integer from 0 to {MAX_ID})"
LIMIT_TEXT = "Query parameter 'limit' must be a positive integer"


def ids(messages: list[dict[str, Any]]) -> list[int]:
    return [m["messageId"] for m in messages]


async def test_history_paging_both_directions(tmp_path: Path) -> None:
    config = make_config(tmp_path, limits={"max_page": MAX_PAGE})
    with trio.fail_after(TIMEOUT):
        async with serving(config) as (server, client):
            admin = await admin_actor(client)
            (alice,) = await user_actors(client, server, "alice")
            room_id = await create_room(client, admin, "big", "Public")
            posted: list[int] = []
            for start in (0, 100, 200):
                size = 100 if start < 200 else 30
                posted += await post_batch(
                    client, alice, room_id, (f"m{n}" for n in range(start, start + size))
                )
                await comment(client, admin, posted[-1])  # comments never show in history
            assert posted == sorted(posted)
            assert len(set(posted)) == 230
            top = set(posted)

            async def page(**params: str | int) -> list[int]:
                got = ids(await history(client, alice, room_id, **params))
                assert got == sorted(got)  # ascending, whatever the direction
                assert set(got) <= top
                return got

            assert await page() == posted[:MAX_PAGE]
            assert await page(cursor=-1) == posted[:MAX_PAGE]
            assert await page(direction="forward", cursor=-1) == posted[:MAX_PAGE]
            assert await page(direction="backward") == posted[-MAX_PAGE:]
            assert await page(direction="backward", cursor=-1) == posted[-MAX_PAGE:]
            assert await page(limit=1000) == posted[:MAX_PAGE]
            assert await page(limit=7) == posted[:7]
            assert await page(direction="backward", limit=3) == posted[-3:]
            assert await page(cursor=posted[10], limit=5) == posted[11:16]
            assert await page(cursor=posted[10], limit=5, direction="backward") == posted[5:10]
            assert await page(cursor=posted[-1]) == []
            assert await page(cursor=posted[0], direction="backward") == []

            walked: list[int] = []
            cursor = -1
            while chunk := await page(cursor=cursor, limit=40):
                walked += chunk
                cursor = chunk[-1]
            assert walked == posted
            walked = []
            cursor = -1
            while chunk := await page(cursor=cursor, direction="backward"):
                walked = chunk + walked
                cursor = chunk[0]
            assert walked == posted


BAD_PAGING = [
    ("cursor=abc", CURSOR_TEXT),
    ("cursor=-5", CURSOR_TEXT),
    ("cursor=1.5", CURSOR_TEXT),
    ("cursor=%2B5", CURSOR_TEXT),
    ("cursor=%EF%BC%95", CURSOR_TEXT),  # a full-width digit five
    (f"cursor={2**53}", CURSOR_TEXT),
    (f"cursor={2**63}", CURSOR_TEXT),
    (f"cursor={10**30}", CURSOR_TEXT),
    ("cursor=1&cursor=2", "Query parameter 'cursor' must be given at most once"),
    ("limit=0", LIMIT_TEXT),
    ("limit=000", LIMIT_TEXT),
    ("limit=-1", LIMIT_TEXT),
    ("limit=ten", LIMIT_TEXT),
    ("limit=1e3", LIMIT_TEXT),
    ("limit=5&limit=5", "Query parameter 'limit' must be given at most once"),
    ("direction=sideways", "Query parameter 'direction' must be 'forward' or 'backward'"),
    ("direction=Backward", "Query parameter 'direction' must be 'forward' or 'backward'"),
    (
        "direction=forward&direction=backward",
        "Query parameter 'direction' must be given at most once",
    ),
]


@pytest.mark.parametrize(("query", "text"), BAD_PAGING)
async def test_bad_paging_values_are_400(
    client: httpx.AsyncClient, server: trio_events.RunningServer, query: str, text: str
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        room_id = await create_room(client, admin, "r", "Public")
        parent = await post(client, admin, room_id, "parent")
        for url in (f"/api/v1/rooms/{room_id}/messages", f"/api/v1/messages/{parent}/comments"):
            response = await client.get(f"{url}?{query}", headers=admin.headers)
            assert_error(response, 400, text)


async def test_large_limits_are_capped_and_unknown_parameters_ignored(tmp_path: Path) -> None:
    config = make_config(tmp_path, limits={"max_page": 5})
    with trio.fail_after(TIMEOUT):
        async with serving(config) as (_, client):
            admin = await admin_actor(client)
            room_id = await create_room(client, admin, "r", "Public")
            posted = await post_batch(client, admin, room_id, (f"m{n}" for n in range(8)))
            replies = [await comment(client, admin, posted[0], f"c{n}") for n in range(8)]
            for limit in ("6", "0006", "5000", str(2**63), "9" * 30, "9" * 5000):
                assert ids(await history(client, admin, room_id, limit=limit)) == posted[:5]
                assert ids(await comments(client, admin, posted[0], limit=limit)) == replies[:5]
            assert ids(await history(client, admin, room_id, limit="05")) == posted[:5]
            assert ids(await history(client, admin, room_id, limit="3")) == posted[:3]
            last = str(MAX_ID)
            assert ids(await history(client, admin, room_id, cursor=last, direction="backward"))
            assert ids(await history(client, admin, room_id, cursor=last)) == []
            assert ids(await history(client, admin, room_id, cursor="", limit="")) == posted[:5]
            assert ids(await history(client, admin, room_id, cursor=f"00{posted[5]}")) == posted[6:]
            unknown = {"_": "1712345678", "foo": "1", "Limit": "2", "limit[]": "x"}
            assert ids(await history(client, admin, room_id, **unknown, limit=2)) == posted[:2]
            params = {"_": "1", "foo": "1", "foo ": "2"}
            assert ids(await comments(client, admin, posted[0], **params, limit=2)) == replies[:2]


async def test_posted_message_fields_and_defaults(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        (alice,) = await user_actors(client, server, "alice")
        room_id = await create_room(client, admin, "r", "Public")
        plain = await post(client, alice, room_id, "plain text")
        exact = await post(client, alice, room_id, "  héllo 👋\n" + "x" * (65536 - 14))
        issue = await post(client, alice, room_id, "fix it", messageType="Issue")
        meeting = await post(
            client,
            alice,
            room_id,
            "meet",
            messageType="Meeting",
            meetingProperties={"timeUtc": 1_700_000_000_000},
            markupType="TextMarkdown",
            priority="High",
        )
        assigned = await post(
            client,
            alice,
            room_id,
            "bug",
            messageType="Issue",
            issueProperties={"type": "Bug", "status": "InProgress", "assignees": [alice.user_id]},
        )
        listed = {m["messageId"]: m for m in await history(client, admin, room_id)}
    assert list(listed) == [plain, exact, issue, meeting, assigned]
    assert listed[exact]["text"] == "  héllo 👋\n" + "x" * (65536 - 14)  # kept as sent
    for message in listed.values():
        assert set(message) - {"issueProperties", "meetingProperties"} == MESSAGE_FIELDS
        assert message["parentMessageId"] == 0
        assert message["userId"] == alice.user_id
        assert message["roomId"] == room_id
        assert message["commentCount"] == 0
        assert message["attachments"] == []
        for field in ("createdUtc", "lastModifiedUtc", "lastEditedUtc"):
            assert isinstance(message[field], int)
        assert message["createdUtc"] > 1_600_000_000_000
        assert [r["userId"] for r in message["readTimestamps"]] == [alice.user_id]
        assert isinstance(message["readTimestamps"][0]["readUtc"], int)
    first = listed[plain]
    assert (first["text"], first["markupType"], first["messageType"], first["priority"]) == (
        "plain text",
        "TextPlain",
        "Regular",
        "Normal",
    )
    assert "issueProperties" not in first
    assert "meetingProperties" not in first
    assert listed[issue]["issueProperties"] == {"type": "Task", "status": "ToDo", "assignees": []}
    assert "meetingProperties" not in listed[issue]
    assert listed[meeting]["meetingProperties"] == {"timeUtc": 1_700_000_000_000, "duration": 0}
    assert (listed[meeting]["markupType"], listed[meeting]["priority"]) == ("TextMarkdown", "High")
    assert listed[assigned]["issueProperties"] == {
        "type": "Bug",
        "status": "InProgress",
        "assignees": [alice.user_id],
    }


BAD_POSTS: list[tuple[dict[str, Any], int]] = [
    ({}, 400),
    ({"content": ""}, 400),
    ({"content": " \n\t "}, 400),
    ({"content": 42}, 400),
    ({"content": "x", "markupType": "TextRtf"}, 400),
    ({"content": "x", "messageType": "Poll"}, 400),
    ({"content": "x", "priority": "Urgent"}, 400),
    ({"content": "x", "issueProperties": {"type": "Bug"}}, 400),
    ({"content": "x", "messageType": "Issue", "issueProperties": {"type": "Chore"}}, 400),
    ({"content": "x", "messageType": "Issue", "issueProperties": {"assignees": [424242]}}, 400),
    ({"content": "x", "messageType": "Meeting"}, 400),
    ({"content": "x", "messageType": "Meeting", "meetingProperties": {"duration": 5}}, 400),
    ({"content": "x", "mood": "happy"}, 400),
    ({"content": "nul \x00 inside"}, 400),
    ({"content": "x" * 65537}, 413),
    ({"messages": []}, 400),
    ({"messages": [{"content": "ok"}], "content": "x"}, 400),
    ({"messages": [{"content": "ok"}] * 101}, 400),
    ({"messages": [{"content": "ok"}, {"content": ""}]}, 400),
    ({"messages": [{"content": "ok"}, {"content": "ok", "priority": "Meh"}]}, 400),
    ({"messages": [{"content": "ok"}, {"content": "é" * 40000}]}, 413),
]


@pytest.mark.parametrize(("body", "status"), BAD_POSTS)
async def test_bad_post_changes_nothing(
    client: httpx.AsyncClient, server: trio_events.RunningServer, body: dict[str, Any], status: int
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        (alice,) = await user_actors(client, server, "alice")
        room_id = await create_room(client, admin, "r", "Public")
        parent = await post(client, alice, room_id, "parent")
        before = await snapshot(client, server, alice)
        url = f"/api/v1/rooms/{room_id}/messages"
        assert_error(await client.post(url, json=body, headers=alice.headers), status)
        if "messages" not in body:
            url = f"/api/v1/messages/{parent}/comments"
            assert_error(await client.post(url, json=body, headers=alice.headers), status)
        assert await snapshot(client, server, alice) == before


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        (
            {"messageType": "Meeting"},
            "Field 'meetingProperties' is required for messages of type Meeting",
        ),
        (
            {"messageType": "Meeting", "meetingProperties": None},
            "Field 'meetingProperties' is required for messages of type Meeting",
        ),
        (
            {"messageType": "Meeting", "meetingProperties": []},
            "Field 'meetingProperties' must be a JSON object",
        ),
        (
            {"messageType": "Meeting", "meetingProperties": {}},
            "Field 'meetingProperties.timeUtc' is required",
        ),
        (
            {"messageType": "Issue", "issueProperties": ""},
            "Field 'issueProperties' must be a JSON object",
        ),
        (
            {"messageType": "Issue", "issueProperties": []},
            "Field 'issueProperties' must be a JSON object",
        ),
        (
            {"messageType": "Regular", "meetingProperties": {"timeUtc": 1}},
            "Field 'meetingProperties' is only for messages of type Meeting",
        ),
    ],
)
async def test_type_properties_errors_say_what_is_wrong(
    client: httpx.AsyncClient, server: trio_events.RunningServer, fields: Json, text: str
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        room_id = await create_room(client, admin, "r", "Public")
        before = await snapshot(client, server, admin)
        body = {"content": "x", **fields}
        url = f"/api/v1/rooms/{room_id}/messages"
        assert_error(await client.post(url, json=body, headers=admin.headers), 400, text)
        batch = {"messages": [{"content": "ok"}, body]}
        response = await client.post(url, json=batch, headers=admin.headers)
        assert_error(response, 400, f"messages[1]: {text}")
        assert await snapshot(client, server, admin) == before
        no_properties = await post(client, admin, room_id, "task", messageType="Issue")
        listed = await history(client, admin, room_id)
    assert ids(listed) == [no_properties]
    assert listed[0]["issueProperties"] == {"type": "Task", "status": "ToDo", "assignees": []}


async def test_batch_answers_ids_in_order(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        room_id = await create_room(client, admin, "r", "Public")
        single = await post(client, admin, room_id, "one")
        batch = await post_batch(client, admin, room_id, ["a", "b", "c"])
        listed = await history(client, admin, room_id)
    assert batch == sorted(batch)
    assert batch[0] > single
    assert ids(listed) == [single, *batch]
    assert [m["text"] for m in listed] == ["one", "a", "b", "c"]


async def edit(client: httpx.AsyncClient, actor: Actor, message_id: int, **fields: Any) -> Any:
    url = f"/api/v1/messages/{message_id}"
    return await client.patch(url, json=fields, headers=actor.headers)


async def test_edit_permissions_and_timestamps(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        author, mod, other = await user_actors(client, server, "author", "mod", "other")
        room_id = await create_room(client, admin, "r", "Public", moderators=[mod])
        message_id = await post(client, author, room_id, "v1")
        original = await message_by_id(client, author, room_id, message_id)
        before = await snapshot(client, server, author)
        assert_error(await edit(client, other, message_id, content="hijack"), 403)
        assert_error(await edit(client, author, message_id, content="  "), 400)
        assert_error(await edit(client, author, message_id, priority="Meh"), 400)
        assert_error(await edit(client, author, message_id, messageType="Issue"), 400)
        assert_error(await edit(client, author, message_id, issueProperties={"type": "Bug"}), 400)
        assert_error(await edit(client, author, message_id), 400)
        assert_error(await edit(client, author, 999999, content="nope"), 404)
        assert await snapshot(client, server, author) == before

        reprioritized = body_of(await edit(client, author, message_id, priority="Low"))["message"]
        assert reprioritized["priority"] == "Low"
        assert reprioritized["text"] == "v1"
        assert reprioritized["lastEditedUtc"] == original["lastEditedUtc"]
        assert reprioritized["lastModifiedUtc"] >= original["lastModifiedUtc"]

        by_author = body_of(await edit(client, author, message_id, content="v2"))["message"]
        assert by_author["text"] == "v2"
        assert by_author["lastEditedUtc"] >= original["createdUtc"]
        assert by_author["lastEditedUtc"] > 0
        assert by_author["lastEditedUtc"] != original["lastEditedUtc"]
        by_mod = body_of(await edit(client, mod, message_id, content="v3"))["message"]
        by_admin = body_of(await edit(client, admin, message_id, content="v4"))["message"]
        assert (by_mod["text"], by_admin["text"]) == ("v3", "v4")
        assert by_admin["userId"] == author.user_id
        assert by_admin["createdUtc"] == original["createdUtc"]
        stored = await message_by_id(client, other, room_id, message_id)
    assert stored == by_admin


async def test_comments_and_comment_counts(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        alice, bob = await user_actors(client, server, "alice", "bob")
        room_id = await create_room(client, admin, "r", "Public")
        parent = await post(client, alice, room_id, "parent")
        other = await post(client, alice, room_id, "other")
        replies = [await comment(client, bob, parent, f"c{n}") for n in range(5)]
        listed = await comments(client, alice, parent)
        assert ids(listed) == replies
        for reply in listed:
            assert set(reply) == MESSAGE_FIELDS
            assert (reply["parentMessageId"], reply["roomId"]) == (parent, room_id)
            assert reply["userId"] == bob.user_id
            assert reply["commentCount"] == 0
        assert (
            ids(await comments(client, alice, parent, cursor=replies[1], limit=2)) == (replies[2:4])
        )
        assert (
            ids(await comments(client, alice, parent, direction="backward", limit=2))
            == (replies[3:])
        )
        assert await comments(client, alice, other) == []
        assert ids(await history(client, alice, room_id)) == [parent, other]
        counts = {m["messageId"]: m["commentCount"] for m in await history(client, bob, room_id)}
        assert counts == {parent: 5, other: 0}

        before = await snapshot(client, server, alice)
        response = await client.post(
            f"/api/v1/messages/{replies[0]}/comments", json={"content": "deep"}, headers=bob.headers
        )
        assert_error(response, 400)
        assert_error(
            await client.get(f"/api/v1/messages/{replies[0]}/comments", headers=bob.headers), 400
        )
        assert_error(
            await client.post(
                "/api/v1/messages/999999/comments", json={"content": "x"}, headers=bob.headers
            ),
            404,
        )
        assert await snapshot(client, server, alice) == before


async def test_comment_paging_both_directions(tmp_path: Path) -> None:
    """250 comments under one message, others around them: every page is
    ascending, the cursor is exclusive, the limit is capped at max_page."""
    config = make_config(tmp_path, limits={"max_page": MAX_PAGE})
    with trio.fail_after(TIMEOUT):
        async with serving(config) as (server, client):
            admin = await admin_actor(client)
            alice, bob = await user_actors(client, server, "alice", "bob")
            room_id = await create_room(client, admin, "r", "Public")
            parent, other = await post_batch(client, alice, room_id, ["parent", "other"])
            replies: list[int] = []
            for n in range(250):
                replies.append(await comment(client, (alice, bob)[n % 2], parent, f"c{n}"))
                if n % 50 == 0:  # neither other comments nor messages show up
                    await comment(client, bob, other, f"elsewhere {n}")
                    await post(client, alice, room_id, f"top {n}")
            assert replies == sorted(replies)
            mine = set(replies)

            async def page(**params: str | int) -> list[int]:
                got = ids(await comments(client, alice, parent, **params))
                assert got == sorted(got)
                assert set(got) <= mine
                return got

            assert await page() == replies[:MAX_PAGE]
            assert await page(cursor=-1) == replies[:MAX_PAGE]
            assert await page(cursor="") == replies[:MAX_PAGE]
            assert await page(direction="backward") == replies[-MAX_PAGE:]
            assert await page(direction="backward", cursor=-1) == replies[-MAX_PAGE:]
            assert await page(limit=1000) == replies[:MAX_PAGE]
            assert await page(limit=9) == replies[:9]
            assert await page(direction="backward", limit=4) == replies[-4:]
            assert await page(cursor=replies[100], limit=5) == replies[101:106]
            assert await page(cursor=replies[100], direction="backward") == replies[50:100]
            assert await page(cursor=parent) == replies[:MAX_PAGE]  # ids below the first
            assert await page(cursor=replies[-1]) == []
            assert await page(cursor=replies[0], direction="backward") == []

            for limit in (7, MAX_PAGE, 1000):
                walked: list[int] = []
                cursor: int = -1
                while chunk := await page(cursor=cursor, limit=limit):
                    walked += chunk
                    cursor = chunk[-1]
                assert walked == replies, limit
                walked = []
                cursor = -1
                while chunk := await page(cursor=cursor, direction="backward", limit=limit):
                    walked = chunk + walked
                    cursor = chunk[0]
                assert walked == replies, limit
            counts = {
                m["messageId"]: m["commentCount"] for m in await history(client, bob, room_id)
            }
            assert (counts[parent], counts[other]) == (250, 5)


async def test_delete_rules(client: httpx.AsyncClient, server: trio_events.RunningServer) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        alice, bob, mod = await user_actors(client, server, "alice", "bob", "mod")
        room_id = await create_room(client, admin, "r", "Public", moderators=[mod])
        parent = await post(client, alice, room_id, "parent")
        kept = await post(client, alice, room_id, "kept")
        replies = [await comment(client, bob, parent, f"c{n}") for n in range(3)]
        before = await snapshot(client, server, alice)
        for message_id in (parent, replies[0]):
            url = f"/api/v1/messages/{message_id}"
            assert_error(
                await client.delete(url, headers=(bob if message_id == parent else alice).headers),
                403,
            )
        assert_error(await client.delete("/api/v1/messages/999999", headers=admin.headers), 404)
        assert await snapshot(client, server, alice) == before

        await delete_message(client, bob, replies[0])
        assert ids(await comments(client, alice, parent)) == replies[1:]
        assert (await message_by_id(client, alice, room_id, parent))["commentCount"] == 2
        await delete_message(client, mod, replies[1])
        assert (await message_by_id(client, alice, room_id, parent))["commentCount"] == 1
        await delete_message(client, admin, parent)
        assert ids(await history(client, bob, room_id)) == [kept]
        assert_error(
            await client.get(f"/api/v1/messages/{parent}/comments", headers=bob.headers), 404
        )
        assert_error(
            await client.delete(f"/api/v1/messages/{replies[2]}", headers=bob.headers), 404
        )
        orphans = await server.services.store.read(lambda tx: tx.get_messages(replies))
    assert orphans == []


async def test_archived_room_is_read_only(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        (alice,) = await user_actors(client, server, "alice")
        room_id = await create_room(client, admin, "r", "Public")
        message_id = await post(client, alice, room_id, "before")
        reply = await comment(client, alice, message_id)
        body_of(
            await client.patch(
                f"/api/v1/rooms/{room_id}", json={"isArchived": True}, headers=admin.headers
            )
        )
        before = await snapshot(client, server, alice)
        for actor in (alice, admin):
            h = actor.headers
            for response in [
                await client.post(
                    f"/api/v1/rooms/{room_id}/messages", json={"content": "x"}, headers=h
                ),
                await client.post(
                    f"/api/v1/rooms/{room_id}/messages",
                    json={"messages": [{"content": "x"}]},
                    headers=h,
                ),
                await client.post(
                    f"/api/v1/messages/{message_id}/comments", json={"content": "x"}, headers=h
                ),
                await client.patch(
                    f"/api/v1/messages/{message_id}", json={"content": "x"}, headers=h
                ),
                await client.delete(f"/api/v1/messages/{message_id}", headers=h),
                await client.delete(f"/api/v1/messages/{reply}", headers=h),
            ]:
                assert_error(response, 403)
        assert await snapshot(client, server, alice) == before
        assert ids(await history(client, alice, room_id)) == [message_id]


async def test_oversized_request_leaves_the_connection_usable(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    """A body over limits.max_request_bytes is refused with 413, and the kept-alive
    connection it came on still answers the next request."""
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        room_id = await create_room(client, admin, "r", "Public")
        huge = {"messages": [{"content": "x" * 60000}] * 20}  # about 1.2 MB
        response = await client.post(
            f"/api/v1/rooms/{room_id}/messages", json=huge, headers=admin.headers
        )
        assert_error(response, 413)
        try:
            follow: httpx.Response | None = await client.get(
                f"/api/v1/rooms/{room_id}/messages", headers=admin.headers, timeout=3
            )
        except httpx.ReadTimeout:
            follow = None
    assert follow is not None, "no answer on the connection after an early 413"
    assert body_of(follow)["messages"] == []
