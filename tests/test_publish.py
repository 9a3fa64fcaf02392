"""Embedding: ``RunningServer.publish`` sends application events through the same log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

from trio_events.errors import BadRequest, NotFound
from trio_events.model import SYSTEM_USER

from .helpers import ADMIN_NAME, ADMIN_PASSWORD, TEST_TIMEOUT, login, make_config, serving


async def test_published_event_reaches_the_room_audience(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, client):
            room = await server.services.rooms.create(
                None, {"displayName": "Builds", "roomType": "Public"}
            )
            session = await login(client, ADMIN_NAME, ADMIN_PASSWORD)
            url = server.url.replace("http", "ws", 1) + "/api/v1/events"
            cookie = (b"Cookie", f"VirolaUserSessionId={session}".encode())
            async with open_websocket_url(url, extra_headers=[cookie]) as ws:
                hello = json.loads(await ws.get_message())
                event_id = await server.publish(
                    "BuildFinished", {"build": 7}, room_id=room["roomId"]
                )
                frame = json.loads(await ws.get_message())
            assert frame == {"type": "BuildFinished", "data": {"build": 7}, "eventId": event_id}
            assert event_id > hello["data"]["eventId"]
            # it is in the durable log like every other event
            logged = await server.services.store.read(lambda tx: tx.events_after(event_id - 1, 1))
            assert logged[0].event_type == "BuildFinished"
            assert await server.services.rooms.list_rooms(SYSTEM_USER)


@pytest.mark.parametrize(
    ("event_type", "kwargs", "error"),
    [
        ("TextMessagesCreated", {"room_id": 1}, BadRequest),
        ("has.dot", {"room_id": 1}, BadRequest),
        ("", {"room_id": 1}, BadRequest),
        ("Fine", {}, BadRequest),
        ("Fine", {"room_id": 1, "user_ids": [1]}, BadRequest),
        ("Fine", {"room_id": 999}, NotFound),
    ],
)
async def test_publish_refuses_bad_events(
    tmp_path: Path, event_type: str, kwargs: dict[str, object], error: type[Exception]
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, _):
            await server.services.rooms.create(None, {"displayName": "R", "roomType": "Public"})
            before = await server.services.store.read(lambda tx: tx.latest_event_id())
            with pytest.raises(error):
                await server.publish(event_type, {}, **kwargs)  # type: ignore[arg-type]
            after = await server.services.store.read(lambda tx: tx.latest_event_id())
            assert after == before


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("bus", {"backend": "redis"}, "bus.url: a redis://"),
        ("bus", {"backend": "redis", "url": "http://127.0.0.1:6379"}, "bus.url: a redis://"),
        ("storage", {"backend": "postgresql"}, "storage.url: required"),
        ("storage", {"backend": "postgresql", "url": "mysql://x/y"}, "storage.url: expected"),
        (
            "storage",
            {"backend": "postgresql", "url": "postgresql://nobody@127.0.0.1:1/nothing"},
            "storage.url: cannot connect to PostgreSQL",
        ),
    ],
)
async def test_cluster_backends_without_a_usable_url_are_refused(
    tmp_path: Path, section: str, values: dict[str, object], message: str
) -> None:
    from trio_events import ConfigError, open_server

    with pytest.raises(ConfigError, match=message), trio.fail_after(TEST_TIMEOUT):
        async with open_server(make_config(tmp_path, **{section: values})):
            pass
