"""Which REST action appends which events for whom (API.md 8, the table).

Each test takes a mark in the log before one action and compares the
client-facing events appended after it (type, room, audience, key payload
fields); internal ``acl.*`` rows are checked where the router needs them.
"""

from __future__ import annotations

import httpx
import trio

import trio_events
from trio_events.events import is_internal

from .helpers import assert_error
from .rest_helpers import (
    Actor,
    admin_actor,
    body_of,
    client_events_after,
    comment,
    create_room,
    delete_message,
    events_after,
    latest_event_id,
    mark_read,
    payload,
    post,
    post_batch,
    rendered_room,
    shape,
    user_actors,
)

TIMEOUT = 60


async def setup(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> tuple[Actor, Actor, Actor, int]:
    admin = await admin_actor(client)
    alice, bob = await user_actors(client, server, "alice", "bob")
    room_id = await create_room(client, admin, "r", "Public")
    return admin, alice, bob, room_id


async def test_post_messages_events(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        _, alice, bob, room_id = await setup(client, server)
        mark = await latest_event_id(server)
        single = await post(client, alice, room_id)
        after_single = await latest_event_id(server)
        batch = await post_batch(client, alice, room_id, ["a", "b", "c"])
        first = await client_events_after(server, mark)
        second = await client_events_after(server, after_single)
    assert shape(first[:2]) == [
        ("TextMessagesCreated", room_id, None),
        ("RoomUpdated", room_id, None),
    ]
    assert [m["messageId"] for m in payload(first[0])["messages"]] == [single]
    assert shape(second) == [("TextMessagesCreated", room_id, None), ("RoomUpdated", room_id, None)]
    assert [m["messageId"] for m in payload(second[0])["messages"]] == batch
    room_update = second[1]
    for_alice = rendered_room(room_update, alice.user_id)
    for_bob = rendered_room(room_update, bob.user_id)
    assert for_alice["lastMessage"]["messageId"] == batch[-1]
    assert for_alice["unreadMessageCount"] == 0
    assert for_bob["unreadMessageCount"] == 4
    assert rendered_room(first[1], alice.user_id)["unreadMessageCount"] == 0
    assert rendered_room(first[1], bob.user_id)["unreadMessageCount"] == 1


async def test_comment_edit_and_read_events(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        _, alice, bob, room_id = await setup(client, server)
        parent = await post(client, alice, room_id)
        mark = await latest_event_id(server)
        reply = await comment(client, bob, parent)
        commented = await client_events_after(server, mark)
        mark = await latest_event_id(server)
        body_of(
            await client.patch(
                f"/api/v1/messages/{parent}", json={"content": "edited"}, headers=alice.headers
            )
        )
        edited = await client_events_after(server, mark)
        mark = await latest_event_id(server)
        await mark_read(client, bob, parent)
        read_top = await client_events_after(server, mark)
        mark = await latest_event_id(server)
        await mark_read(client, alice, reply)
        read_comment = await client_events_after(server, mark)
    assert shape(commented) == [
        ("TextMessagesCreated", room_id, None),
        ("TextMessagesUpdated", room_id, None),
    ]
    assert [(m["messageId"], m["parentMessageId"]) for m in payload(commented[0])["messages"]] == [
        (reply, parent)
    ]
    assert [(m["messageId"], m["commentCount"]) for m in payload(commented[1])["messages"]] == [
        (parent, 1)
    ]
    assert shape(edited) == [("TextMessagesUpdated", room_id, None)]
    assert payload(edited[0])["messages"][0]["text"] == "edited"
    assert shape(read_top) == [
        ("TextMessagesUpdated", room_id, None),
        ("RoomUpdated", room_id, (bob.user_id,)),
    ]
    read_by = [r["userId"] for r in payload(read_top[0])["messages"][0]["readTimestamps"]]
    assert read_by == [alice.user_id, bob.user_id]
    assert rendered_room(read_top[1], bob.user_id)["unreadMessageCount"] == 0
    assert shape(read_comment) == [("TextMessagesUpdated", room_id, None)]


async def test_delete_events(client: httpx.AsyncClient, server: trio_events.RunningServer) -> None:
    with trio.fail_after(TIMEOUT):
        admin, alice, bob, room_id = await setup(client, server)
        older = await post(client, alice, room_id)
        newest = await post(client, alice, room_id)
        reply = await comment(client, bob, newest)
        for reader in (admin, bob):
            await mark_read(client, reader, older)
        mark = await latest_event_id(server)
        await delete_message(client, bob, reply)
        comment_deleted = await client_events_after(server, mark)
        mark = await latest_event_id(server)
        await delete_message(client, alice, older)  # read by all, not the last: no RoomUpdated
        quiet = await client_events_after(server, mark)
        mark = await latest_event_id(server)
        await delete_message(client, alice, newest)
        loud = await client_events_after(server, mark)
    assert shape(comment_deleted) == [
        ("TextMessageDeleted", room_id, None),
        ("TextMessagesUpdated", room_id, None),
    ]
    assert payload(comment_deleted[0]) == {
        "parentMessageId": newest,
        "roomId": room_id,
        "messageId": reply,
    }
    assert payload(comment_deleted[1])["messages"][0]["commentCount"] == 0
    assert shape(quiet) == [("TextMessageDeleted", room_id, None)]
    assert payload(quiet[0]) == {"parentMessageId": 0, "roomId": room_id, "messageId": older}
    assert shape(loud) == [("TextMessageDeleted", room_id, None), ("RoomUpdated", room_id, None)]
    assert rendered_room(loud[1], bob.user_id)["lastMessage"] is None
    assert rendered_room(loud[1], bob.user_id)["unreadMessageCount"] == 0


async def test_create_and_delete_room_events(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        alice, bob = await user_actors(client, server, "alice", "bob")
        mark = await latest_event_id(server)
        room_id = await create_room(client, admin, "p", "Private", [alice], [bob])
        created_all = await events_after(server, mark)
        mark = await latest_event_id(server)
        body_of(await client.delete(f"/api/v1/rooms/{room_id}", headers=admin.headers))
        deleted_all = await events_after(server, mark)
    created = [e for e in created_all if not is_internal(e.event_type)]
    assert shape(created) == [("RoomCreated", room_id, None)]
    internal = [(e.event_type, payload(e)) for e in created_all if is_internal(e.event_type)]
    assert (
        "acl.room",
        {"roomId": room_id, "roomType": "Private", "previousType": None},
    ) in internal
    for user in (alice, bob):
        assert (
            "acl.member",
            {"roomId": room_id, "userId": user.user_id, "member": True},
        ) in internal
    assert created_all[-1] == created[0]  # the ACL rows precede the event they gate
    assert rendered_room(created[0], bob.user_id)["isModerator"] is True
    assert rendered_room(created[0], alice.user_id)["isModerator"] is False
    assert shape([e for e in deleted_all if not is_internal(e.event_type)]) == [
        ("RoomDeleted", room_id, tuple(sorted([admin.user_id, alice.user_id, bob.user_id])))
    ]
    assert payload(deleted_all[0]) == {"roomId": room_id}


async def test_update_room_narrowing_and_widening(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin, member, outsider, room_id = await setup(client, server)
        body_of(
            await client.put(
                f"/api/v1/rooms/{room_id}/members/{member.user_id}", headers=admin.headers
            )
        )
        url = f"/api/v1/rooms/{room_id}"
        mark = await latest_event_id(server)
        body_of(await client.patch(url, json={"displayName": "renamed"}, headers=admin.headers))
        renamed = await client_events_after(server, mark)
        mark = await latest_event_id(server)
        body_of(await client.patch(url, json={"roomType": "Private"}, headers=admin.headers))
        narrowed_all = await events_after(server, mark)
        mark = await latest_event_id(server)
        body_of(await client.patch(url, json={"roomType": "Public"}, headers=admin.headers))
        widened = await client_events_after(server, mark)
    kept = tuple(sorted([admin.user_id, member.user_id]))
    assert shape(renamed) == [("RoomUpdated", room_id, None)]
    assert rendered_room(renamed[0], outsider.user_id)["displayName"] == "renamed"
    assert narrowed_all[0].event_type == "acl.room"
    assert shape([e for e in narrowed_all if not is_internal(e.event_type)]) == [
        ("RoomUpdated", room_id, kept),
        ("RoomDeleted", room_id, (outsider.user_id,)),
    ]
    assert rendered_room(narrowed_all[1], member.user_id)["roomType"] == "Private"
    assert payload(narrowed_all[2]) == {"roomId": room_id}
    assert shape(widened) == [
        ("RoomUpdated", room_id, kept),
        ("RoomCreated", room_id, (outsider.user_id,)),
    ]
    assert rendered_room(widened[1], outsider.user_id)["roomType"] == "Public"


async def test_member_events(client: httpx.AsyncClient, server: trio_events.RunningServer) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        alice, bob = await user_actors(client, server, "alice", "bob")
        room_id = await create_room(client, admin, "p", "Private", [alice])
        message_id = await post(client, alice, room_id)
        url = f"/api/v1/rooms/{room_id}/members/{bob.user_id}"
        mark = await latest_event_id(server)
        body_of(await client.put(url, json={"isModerator": True}, headers=admin.headers))
        added_all = await events_after(server, mark)
        mark = await latest_event_id(server)
        body_of(await client.put(url, json={"isModerator": True}, headers=admin.headers))
        assert await events_after(server, mark) == []
        body_of(await client.delete(url, headers=admin.headers))
        removed_all = await events_after(server, mark)
        mark = await latest_event_id(server)
        await post(client, alice, room_id)
        after_removal = await client_events_after(server, mark)
    assert [e.event_type for e in added_all] == ["acl.member", "RoomCreated"]
    assert payload(added_all[0]) == {"roomId": room_id, "userId": bob.user_id, "member": True}
    assert added_all[1].audience == (bob.user_id,)
    as_bob = rendered_room(added_all[1], bob.user_id)
    assert (as_bob["isModerator"], as_bob["unreadMessageCount"]) == (True, 1)
    assert as_bob["lastMessage"]["messageId"] == message_id
    assert [e.event_type for e in removed_all] == ["acl.member", "RoomDeleted"]
    assert payload(removed_all[0]) == {"roomId": room_id, "userId": bob.user_id, "member": False}
    assert removed_all[1].audience == (bob.user_id,)
    assert payload(removed_all[1]) == {"roomId": room_id}
    assert all(e.audience is None or bob.user_id not in e.audience for e in after_removal)


async def test_failed_writes_append_no_events(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin, alice, bob, room_id = await setup(client, server)
        message_id = await post(client, alice, room_id)
        mark = await latest_event_id(server)
        messages = f"/api/v1/rooms/{room_id}/messages"
        assert_error(
            await client.post(
                messages,
                json={"messages": [{"content": "ok"}, {"content": ""}]},
                headers=bob.headers,
            ),
            400,
        )
        assert_error(
            await client.patch(
                f"/api/v1/messages/{message_id}", json={"content": "x"}, headers=bob.headers
            ),
            403,
        )
        assert_error(
            await client.delete(f"/api/v1/messages/{message_id}", headers=bob.headers), 403
        )
        assert_error(await client.delete(f"/api/v1/rooms/{room_id}", headers=bob.headers), 403)
        assert_error(
            await client.patch(
                f"/api/v1/rooms/{room_id}", json={"roomType": "Secret"}, headers=admin.headers
            ),
            400,
        )
        assert_error(
            await client.post(
                "/api/v1/rooms",
                json={"displayName": "x", "roomType": "Public", "memberIds": [9999]},
                headers=admin.headers,
            ),
            400,
        )
        assert await events_after(server, mark) == []
