"""Room avatars (API.md 4): who may set them, what is served, what is refused,
and the RoomUpdated each change emits.  User avatars are in test_users_api.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

import trio_events

from .attachment_helpers import DAMAGED_IMAGES, GIF, IMAGES, PNG, WEBP, WRONG_IMAGE_TYPES
from .helpers import TEST_TIMEOUT, assert_error, make_config, serving
from .rest_helpers import (
    Actor,
    admin_actor,
    body_of,
    client_events_after,
    create_room,
    latest_event_id,
    rendered_room,
    room_of,
    shape,
    user_actors,
)


def avatar_url(room_id: int) -> str:
    return f"/api/v1/rooms/{room_id}/avatar.jpg"


async def put_avatar(
    client: httpx.AsyncClient, actor: Actor, room_id: int, data: bytes
) -> httpx.Response:
    return await client.put(avatar_url(room_id), content=data, headers=actor.headers)


async def setup(
    client: httpx.AsyncClient, server: trio_events.RunningServer, room_type: str = "Private"
) -> tuple[Actor, Actor, Actor, Actor, int]:
    """Admin, a moderator, a plain member, an outsider, and the room."""
    admin = await admin_actor(client)
    moderator, member, outsider = await user_actors(client, server, "mod", "member", "outsider")
    room_id = await create_room(
        client, admin, "pictured", room_type, members=[member], moderators=[moderator]
    )
    return admin, moderator, member, outsider, room_id


async def test_set_get_and_replace_emit_room_updated(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin, moderator, member, _, room_id = await setup(client, server)
        previous = (await room_of(client, member, room_id))["lastModifiedUtc"]
        for index, (data, content_type, extension) in enumerate(IMAGES):
            await trio.sleep(0.005)  # timestamps are milliseconds
            setter = admin if index % 2 == 0 else moderator
            mark = await latest_event_id(server)
            body_of(await put_avatar(client, setter, room_id, data))
            events = await client_events_after(server, mark)
            response = await client.get(avatar_url(room_id), headers=member.headers)
            listed = await room_of(client, member, room_id)
            assert response.status_code == 200, response.text
            assert response.content == data
            assert response.headers["content-type"] == content_type
            assert response.headers["content-length"] == str(len(data))
            assert f"avatar.{extension}" in response.headers["content-disposition"]
            assert shape(events) == [("RoomUpdated", room_id, None)]
            announced = rendered_room(events[0], member.user_id)
            assert announced["roomId"] == room_id
            assert announced["lastModifiedUtc"] > previous
            assert listed["lastModifiedUtc"] == announced["lastModifiedUtc"]
            previous = announced["lastModifiedUtc"]


async def test_who_may_set_and_see_a_room_avatar(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin, _, member, outsider, room_id = await setup(client, server)
        public_room = await create_room(client, admin, "open", "Public")
        none_yet = await client.get(avatar_url(room_id), headers=member.headers)
        mark = await latest_event_id(server)
        by_member = await put_avatar(client, member, room_id, PNG)
        by_outsider = await put_avatar(client, outsider, room_id, PNG)
        public_by_user = await put_avatar(client, outsider, public_room, PNG)
        anonymous_put = await client.put(avatar_url(room_id), content=PNG)
        missing_room = await put_avatar(client, admin, 999_999, PNG)
        refused_events = await client_events_after(server, mark)
        body_of(await put_avatar(client, admin, room_id, GIF))
        outsider_get = await client.get(avatar_url(room_id), headers=outsider.headers)
        anonymous_get = await client.get(avatar_url(room_id))
        member_get = await client.get(avatar_url(room_id), headers=member.headers)
        body_of(await put_avatar(client, admin, public_room, WEBP))
        public_get = await client.get(avatar_url(public_room), headers=outsider.headers)
    assert_error(none_yet, 404)
    assert_error(by_member, 403)
    assert_error(by_outsider, 404)
    assert_error(public_by_user, 403)
    assert_error(anonymous_put, 401)
    assert_error(missing_room, 404)
    assert refused_events == []
    assert_error(outsider_get, 404)
    assert GIF not in outsider_get.content
    assert_error(anonymous_get, 401)
    assert member_get.content == GIF
    assert public_get.content == WEBP


@pytest.mark.parametrize("case", sorted(WRONG_IMAGE_TYPES))
async def test_wrong_content_is_415_and_changes_nothing(
    client: httpx.AsyncClient, server: trio_events.RunningServer, case: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin, _, member, _, room_id = await setup(client, server)
        body_of(await put_avatar(client, admin, room_id, PNG))
        before = await room_of(client, member, room_id)
        mark = await latest_event_id(server)
        response = await client.put(
            avatar_url(room_id),
            content=WRONG_IMAGE_TYPES[case],
            headers={**admin.headers, "Content-Type": "image/png"},
        )
        events = await client_events_after(server, mark)
        kept = await client.get(avatar_url(room_id), headers=member.headers)
        after = await room_of(client, member, room_id)
    assert_error(response, 415)
    assert events == []
    assert kept.content == PNG
    assert after == before


@pytest.mark.parametrize("case", sorted(DAMAGED_IMAGES))
async def test_damaged_image_is_400_and_changes_nothing(
    client: httpx.AsyncClient, server: trio_events.RunningServer, case: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin, _, member, _, room_id = await setup(client, server)
        body_of(await put_avatar(client, admin, room_id, PNG))
        before = await room_of(client, member, room_id)
        mark = await latest_event_id(server)
        response = await put_avatar(client, admin, room_id, DAMAGED_IMAGES[case])
        events = await client_events_after(server, mark)
        kept = await client.get(avatar_url(room_id), headers=member.headers)
        after = await room_of(client, member, room_id)
    assert "image is truncated or damaged" in assert_error(response, 400)["errorText"]
    assert events == []
    assert kept.content == PNG
    assert after == before


async def test_empty_avatar_is_400(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin, _, _, _, room_id = await setup(client, server)
        mark = await latest_event_id(server)
        response = await put_avatar(client, admin, room_id, b"")
        events = await client_events_after(server, mark)
    assert_error(response, 400)
    assert events == []


@pytest.mark.parametrize("chunked", [False, True])
async def test_too_big_is_413_and_changes_nothing(tmp_path: Path, chunked: bool) -> None:
    limit = 200
    config = make_config(tmp_path, limits={"max_avatar_bytes": limit})
    exact = PNG + bytes(limit - len(PNG))
    too_big = exact + b"\x00"

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(too_big), 50):
            yield too_big[start : start + 50]

    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            admin, _, member, _, room_id = await setup(client, server)
            body_of(await put_avatar(client, admin, room_id, exact))
            mark = await latest_event_id(server)
            response = await client.put(
                avatar_url(room_id),
                content=stream() if chunked else too_big,
                headers=admin.headers,
            )
            events = await client_events_after(server, mark)
            kept = await client.get(avatar_url(room_id), headers=member.headers)
    assert_error(response, 413)
    assert events == []
    assert kept.content == exact
    assert kept.headers["content-length"] == str(limit)
