"""Inputs that once took the whole server down must only affect their stream."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from .helpers import ADMIN_NAME, ADMIN_PASSWORD, TEST_TIMEOUT, login, serving
from .stream_helpers import cookie, open_stream, stream_config, wait_subscribers


async def _post(client: httpx.AsyncClient, session: str, room_id: int, text: str) -> None:
    response = await client.post(
        f"/api/v1/rooms/{room_id}/messages",
        json={"content": text},
        headers={"Cookie": f"VirolaUserSessionId={session}"},
    )
    assert response.status_code == 200, response.text


async def test_deeply_nested_client_frame_is_ignored(tmp_path: Path) -> None:
    """``json.loads`` of "[" * 2000 raises RecursionError, not ValueError."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            session = await login(client, ADMIN_NAME, ADMIN_PASSWORD)
            room = await server.services.rooms.create(
                None, {"displayName": "R", "roomType": "Public"}
            )
            async with open_stream(server, cookie(session)) as stream:
                await stream.ws.send_message("[" * 2000)
                await _post(client, session, room["roomId"], "still here")
                frame = await stream.frame()
                assert frame["type"] == "TextMessagesCreated"
            assert (await client.get("/healthz")).status_code == 200
            await wait_subscribers(server, 0)


async def test_message_text_that_names_the_room_template_key(tmp_path: Path) -> None:
    """Room events are recognised by type, never by text users can write."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            session = await login(client, ADMIN_NAME, ADMIN_PASSWORD)
            room = await server.services.rooms.create(
                None, {"displayName": "R", "roomType": "Public"}
            )
            async with open_stream(server, cookie(session)) as stream:
                await _post(client, session, room["roomId"], "roomTemplate")
                created = await stream.frame()
                assert created["data"]["messages"][0]["text"] == "roomTemplate"
                updated = await stream.frame()
                assert updated["type"] == "RoomUpdated"
                await _post(client, session, room["roomId"], '"roomTemplate"')
                assert (await stream.frame())["type"] == "TextMessagesCreated"
            assert (await client.get("/healthz")).status_code == 200
