"""The rooms API through the real server: listing, access, administration (API.md 4)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

import trio_events

from .helpers import assert_error
from .rest_helpers import (
    ROOM_FIELDS,
    admin_actor,
    body_of,
    create_room,
    events_after,
    history,
    post,
    room_of,
    rooms_by_id,
    shape,
    snapshot,
    user_actors,
)

TIMEOUT = 60


async def test_room_object_fields_are_per_caller(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        alice, bob = await user_actors(client, server, "alice", "bob")
        busy = await create_room(client, admin, "busy", "Public", [bob], [alice])
        empty = await create_room(client, admin, "empty", "Private", [bob])
        first = await post(client, alice, busy)
        last = await post(client, alice, busy)
        body_of(await client.put(f"/api/v1/rooms/{busy}/pin", headers=alice.headers))
        as_alice = await rooms_by_id(client, alice)
        as_bob = await rooms_by_id(client, bob)
        as_admin = await rooms_by_id(client, admin)
    assert set(as_alice) == {busy}
    assert set(as_bob) == {busy, empty}
    assert set(as_admin) == {busy, empty}
    for rooms in (as_alice, as_bob, as_admin):
        for room in rooms.values():
            assert set(room) == ROOM_FIELDS
            assert room["discussionMessageId"] is None
            assert isinstance(room["createdUtc"], int)
            assert isinstance(room["lastModifiedUtc"], int)
            assert room["isArchived"] is False
    assert first < last
    room = as_alice[busy]
    assert room["displayName"] == "busy"
    assert room["roomType"] == "Public"
    assert room["lastMessage"] == {
        "messageId": last,
        "userId": alice.user_id,
        "createdUtc": room["lastMessage"]["createdUtc"],
    }
    assert isinstance(room["lastMessage"]["createdUtc"], int)
    assert (room["unreadMessageCount"], room["isModerator"], room["isPinned"]) == (0, True, True)
    bobs = as_bob[busy]
    assert (bobs["unreadMessageCount"], bobs["isModerator"], bobs["isPinned"]) == (2, False, False)
    assert bobs["lastMessage"] == room["lastMessage"]
    assert as_admin[busy]["unreadMessageCount"] == 2
    assert as_bob[empty]["lastMessage"] is None
    assert as_bob[empty]["unreadMessageCount"] == 0
    assert as_bob[empty]["roomType"] == "Private"


async def test_access_rule_and_404_for_inaccessible_rooms(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        member, outsider = await user_actors(client, server, "member", "outsider")
        public = await create_room(client, admin, "public", "Public")
        private = await create_room(client, admin, "private", "Private", [member])
        message = await post(client, member, private)
        assert set(await rooms_by_id(client, outsider)) == {public}
        assert set(await rooms_by_id(client, member)) == {public, private}
        assert set(await rooms_by_id(client, admin)) == {public, private}
        assert (await room_of(client, outsider, public))["roomId"] == public
        assert (await room_of(client, admin, private))["roomId"] == private
        before = await snapshot(client, server, admin)
        h = outsider.headers
        for response in [
            await client.get(f"/api/v1/rooms/{private}", headers=h),
            await client.get(f"/api/v1/rooms/{private}/messages", headers=h),
            await client.get(f"/api/v1/rooms/{private}/members", headers=h),
            await client.get(f"/api/v1/room-permissions/{private}", headers=h),
            await client.post(
                f"/api/v1/rooms/{private}/messages", json={"content": "x"}, headers=h
            ),
            await client.patch(f"/api/v1/rooms/{private}", json={"displayName": "x"}, headers=h),
            await client.put(f"/api/v1/rooms/{private}/pin", headers=h),
            await client.get(f"/api/v1/messages/{message}/comments", headers=h),
            await client.post(
                f"/api/v1/messages/{message}/comments", json={"content": "x"}, headers=h
            ),
            await client.post(f"/api/v1/messages/{message}/read", headers=h),
            await client.get("/api/v1/rooms/999999", headers=h),
            await client.get("/api/v1/rooms/999999", headers=admin.headers),
        ]:
            assert_error(response, 404)
        assert await snapshot(client, server, admin) == before


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"roomType": "Public"}, 400),
        ({"displayName": "   ", "roomType": "Public"}, 400),
        ({"displayName": "r", "roomType": "Secret"}, 400),
        ({"displayName": "r"}, 400),
        ({"displayName": "r", "roomType": "Public", "colour": "red"}, 400),
        ({"displayName": "r", "roomType": "Private", "memberIds": [424242]}, 400),
        ({"displayName": "r", "roomType": "Private", "memberIds": ["2"]}, 400),
        ({"displayName": "r" * 101, "roomType": "Public"}, 400),
        ({"displayName": "bell\x07", "roomType": "Public"}, 400),
    ],
)
async def test_create_room_rejects_bad_bodies(
    client: httpx.AsyncClient, server: trio_events.RunningServer, body: dict[str, Any], status: int
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        before = await snapshot(client, server, admin)
        assert_error(await client.post("/api/v1/rooms", json=body, headers=admin.headers), status)
        assert await snapshot(client, server, admin) == before


async def test_only_admins_create_rooms(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        (alice,) = await user_actors(client, server, "alice")
        room_id = await create_room(client, admin, "r", "Public", moderators=[alice])
        before = await snapshot(client, server, admin)
        response = await client.post(
            "/api/v1/rooms",
            json={"displayName": "mine", "roomType": "Public"},
            headers=alice.headers,
        )
        assert_error(response, 403)
        assert await snapshot(client, server, admin) == before
        created = body_of(
            await client.post(
                "/api/v1/rooms",
                json={
                    "displayName": " spaced ",
                    "roomType": "Private",
                    "memberIds": [alice.user_id],
                },
                headers=admin.headers,
            )
        )
    assert created["roomId"] > room_id
    assert set(created["room"]) == ROOM_FIELDS
    assert created["room"]["displayName"] == "spaced"
    assert created["room"]["roomType"] == "Private"
    assert created["room"]["lastMessage"] is None


async def test_moderator_and_admin_patch_room(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        mod, member, outsider = await user_actors(client, server, "mod", "member", "outsider")
        room_id = await create_room(client, admin, "r", "Private", [member], [mod])
        renamed = body_of(
            await client.patch(
                f"/api/v1/rooms/{room_id}", json={"displayName": "renamed"}, headers=mod.headers
            )
        )["room"]
        assert renamed["displayName"] == "renamed"
        assert renamed["isModerator"] is True
        assert (await room_of(client, member, room_id))["displayName"] == "renamed"
        before = await snapshot(client, server, admin)
        for actor, status in [(member, 403), (outsider, 404)]:
            response = await client.patch(
                f"/api/v1/rooms/{room_id}", json={"displayName": "mine"}, headers=actor.headers
            )
            assert_error(response, status)
        for bad in [{}, {"isArchived": "yes"}, {"roomType": "Open"}, {"topic": "x"}]:
            response = await client.patch(f"/api/v1/rooms/{room_id}", json=bad, headers=mod.headers)
            assert_error(response, 400)
        assert await snapshot(client, server, admin) == before
        widened = body_of(
            await client.patch(
                f"/api/v1/rooms/{room_id}", json={"roomType": "Public"}, headers=admin.headers
            )
        )["room"]
        assert widened["roomType"] == "Public"
        assert room_id in await rooms_by_id(client, outsider)
        archived = body_of(
            await client.patch(
                f"/api/v1/rooms/{room_id}", json={"isArchived": True}, headers=mod.headers
            )
        )["room"]
        assert archived["isArchived"] is True
        assert (await room_of(client, outsider, room_id))["isArchived"] is True
        response = await client.post(
            f"/api/v1/rooms/{room_id}/messages", json={"content": "late"}, headers=mod.headers
        )
        assert_error(response, 403)
        assert await history(client, mod, room_id) == []
        reopened = body_of(
            await client.patch(
                f"/api/v1/rooms/{room_id}", json={"isArchived": False}, headers=mod.headers
            )
        )["room"]
        assert reopened["isArchived"] is False
        assert reopened["lastModifiedUtc"] >= archived["lastModifiedUtc"] >= renamed["createdUtc"]
        message_id = await post(client, outsider, room_id, "open again")
        assert [m["messageId"] for m in await history(client, mod, room_id)] == [message_id]


async def test_delete_of_hidden_room_answers_404(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    """API.md 4: "A room the caller may not access answers 404 (not 403)"."""
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        (outsider,) = await user_actors(client, server, "outsider")
        room_id = await create_room(client, admin, "hidden", "Private")
        response = await client.delete(f"/api/v1/rooms/{room_id}", headers=outsider.headers)
        assert room_id in await rooms_by_id(client, admin)
    assert_error(response, 404)


async def test_only_admins_delete_rooms(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        (mod,) = await user_actors(client, server, "mod")
        room_id = await create_room(client, admin, "r", "Private", moderators=[mod])
        message_id = await post(client, mod, room_id)
        assert_error(await client.delete(f"/api/v1/rooms/{room_id}", headers=mod.headers), 403)
        assert room_id in await rooms_by_id(client, mod)
        body_of(await client.delete(f"/api/v1/rooms/{room_id}", headers=admin.headers))
        assert_error(await client.get(f"/api/v1/rooms/{room_id}", headers=admin.headers), 404)
        assert_error(
            await client.get(f"/api/v1/rooms/{room_id}/messages", headers=admin.headers), 404
        )
        assert_error(await client.delete(f"/api/v1/rooms/{room_id}", headers=admin.headers), 404)
        assert await rooms_by_id(client, mod) == {}
        gone = await server.services.store.read(lambda tx: tx.get_message(message_id))
    assert gone is None


async def test_members_list_add_remove(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        mod, bob, carol = await user_actors(client, server, "mod", "bob", "carol")
        room_id = await create_room(client, admin, "r", "Private", [bob], [mod])
        url = f"/api/v1/rooms/{room_id}/members"

        async def members() -> list[dict[str, Any]]:
            body = body_of(await client.get(url, headers=bob.headers))
            assert body["roomId"] == room_id
            listed = body["members"]
            assert isinstance(listed, list)
            return listed

        assert await members() == [
            {"userId": mod.user_id, "isModerator": True},
            {"userId": bob.user_id, "isModerator": False},
        ]
        assert_error(await client.put(f"{url}/{carol.user_id}", headers=bob.headers), 403)
        assert_error(await client.delete(f"{url}/{mod.user_id}", headers=bob.headers), 403)
        assert_error(await client.put(f"{url}/424242", headers=mod.headers), 404)
        assert_error(await client.delete(f"{url}/{carol.user_id}", headers=mod.headers), 404)
        assert_error(
            await client.put(
                f"{url}/{carol.user_id}", json={"isModerator": 1}, headers=mod.headers
            ),
            400,
        )
        assert room_id not in await rooms_by_id(client, carol)
        body_of(await client.put(f"{url}/{carol.user_id}", headers=mod.headers))
        assert (await room_of(client, carol, room_id))["isModerator"] is False
        body_of(
            await client.put(
                f"{url}/{bob.user_id}", json={"isModerator": True}, headers=admin.headers
            )
        )
        assert (await room_of(client, bob, room_id))["isModerator"] is True
        assert await members() == [
            {"userId": mod.user_id, "isModerator": True},
            {"userId": bob.user_id, "isModerator": True},
            {"userId": carol.user_id, "isModerator": False},
        ]
        body_of(await client.delete(f"{url}/{carol.user_id}", headers=bob.headers))
        assert_error(await client.get(f"/api/v1/rooms/{room_id}", headers=carol.headers), 404)
        assert [m["userId"] for m in await members()] == [mod.user_id, bob.user_id]


async def test_pin_is_per_user_and_idempotent(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TIMEOUT):
        admin = await admin_actor(client)
        alice, bob = await user_actors(client, server, "alice", "bob")
        room_id = await create_room(client, admin, "r", "Public")
        pin = f"/api/v1/rooms/{room_id}/pin"
        mark = await server.services.store.read(lambda tx: tx.latest_event_id())
        body_of(await client.put(pin, headers=alice.headers))
        pinned = await events_after(server, mark)
        body_of(await client.put(pin, headers=alice.headers))
        assert await events_after(server, mark) == pinned
        assert (await room_of(client, alice, room_id))["isPinned"] is True
        assert (await room_of(client, bob, room_id))["isPinned"] is False
        body_of(await client.delete(pin, headers=alice.headers))
        unpinned = (await events_after(server, mark))[len(pinned) :]
        body_of(await client.delete(pin, headers=alice.headers))
        assert (await events_after(server, mark))[len(pinned) :] == unpinned
        assert (await room_of(client, alice, room_id))["isPinned"] is False
    audience = (alice.user_id,)
    assert shape(pinned) == [("RoomUpdated", room_id, audience)]
    assert shape(unpinned) == [("RoomUpdated", room_id, audience)]
