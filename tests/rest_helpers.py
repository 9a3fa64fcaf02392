"""Helpers for the rooms, messages and event-log tests: REST calls and log reads.

Every helper asserts the happy-path status itself, so a test reads as the story
it tells; tests that expect an error call the client directly and use
``assert_error``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

import trio_events
from trio_events.events import client_data, is_internal
from trio_events.model import StoredEvent

from .helpers import login_admin, login_user

Headers = dict[str, str]
Json = dict[str, Any]

ROOM_FIELDS = {
    "roomId",
    "displayName",
    "roomType",
    "createdUtc",
    "lastModifiedUtc",
    "isArchived",
    "unreadMessageCount",
    "isModerator",
    "isPinned",
    "lastMessage",
    "discussionMessageId",
}
MESSAGE_FIELDS = {
    "messageId",
    "parentMessageId",
    "userId",
    "roomId",
    "text",
    "createdUtc",
    "lastModifiedUtc",
    "lastEditedUtc",
    "markupType",
    "messageType",
    "priority",
    "commentCount",
    "attachments",
    "readTimestamps",
}


@attrs.frozen
class Actor:
    """A logged-in user: its id and the headers that authenticate it."""

    user_id: int
    headers: Headers


async def admin_actor(client: httpx.AsyncClient) -> Actor:
    headers = await login_admin(client)
    status = await client.get("/api/v1/status", headers=headers)
    assert status.status_code == 200, status.text
    return Actor(int(status.json()["userId"]), headers)


async def user_actors(
    client: httpx.AsyncClient, server: trio_events.RunningServer, *names: str
) -> list[Actor]:
    actors = []
    for name in names:
        user, headers = await login_user(client, server, name)
        actors.append(Actor(user.user_id, headers))
    return actors


def body_of(response: httpx.Response) -> Json:
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, dict)
    assert body["httpStatusCode"] == 200
    return body


async def create_room(
    client: httpx.AsyncClient,
    admin: Actor,
    name: str = "room",
    room_type: str = "Public",
    members: Sequence[Actor] = (),
    moderators: Sequence[Actor] = (),
) -> int:
    payload: Json = {"displayName": name, "roomType": room_type}
    if members:
        payload["memberIds"] = [m.user_id for m in members]
    if moderators:
        payload["moderatorIds"] = [m.user_id for m in moderators]
    body = body_of(await client.post("/api/v1/rooms", json=payload, headers=admin.headers))
    room_id = body["roomId"]
    assert isinstance(room_id, int)
    assert body["room"]["roomId"] == room_id
    return room_id


async def post(
    client: httpx.AsyncClient, actor: Actor, room_id: int, content: str = "hello", **fields: Any
) -> int:
    response = await client.post(
        f"/api/v1/rooms/{room_id}/messages",
        json={"content": content, **fields},
        headers=actor.headers,
    )
    message_id = body_of(response)["messageId"]
    assert isinstance(message_id, int)
    return message_id


async def post_batch(
    client: httpx.AsyncClient, actor: Actor, room_id: int, contents: Iterable[str]
) -> list[int]:
    items = [{"content": content} for content in contents]
    response = await client.post(
        f"/api/v1/rooms/{room_id}/messages", json={"messages": items}, headers=actor.headers
    )
    ids = body_of(response)["messageIds"]
    assert isinstance(ids, list)
    assert len(ids) == len(items)
    return [int(i) for i in ids]


async def comment(
    client: httpx.AsyncClient,
    actor: Actor,
    parent_id: int,
    content: str = "a comment",
    **fields: Any,
) -> int:
    response = await client.post(
        f"/api/v1/messages/{parent_id}/comments",
        json={"content": content, **fields},
        headers=actor.headers,
    )
    message_id = body_of(response)["messageId"]
    assert isinstance(message_id, int)
    return message_id


async def mark_read(client: httpx.AsyncClient, actor: Actor, message_id: int) -> None:
    body_of(await client.post(f"/api/v1/messages/{message_id}/read", headers=actor.headers))


async def delete_message(client: httpx.AsyncClient, actor: Actor, message_id: int) -> None:
    body_of(await client.delete(f"/api/v1/messages/{message_id}", headers=actor.headers))


async def history(
    client: httpx.AsyncClient, actor: Actor, room_id: int, **params: str | int
) -> list[Json]:
    response = await client.get(
        f"/api/v1/rooms/{room_id}/messages", params=params, headers=actor.headers
    )
    body = body_of(response)
    assert body["roomId"] == room_id
    messages = body["messages"]
    assert isinstance(messages, list)
    return messages


async def comments(
    client: httpx.AsyncClient, actor: Actor, parent_id: int, **params: str | int
) -> list[Json]:
    response = await client.get(
        f"/api/v1/messages/{parent_id}/comments", params=params, headers=actor.headers
    )
    body = body_of(response)
    assert body["parentMessageId"] == parent_id
    messages = body["messages"]
    assert isinstance(messages, list)
    return messages


async def message_by_id(
    client: httpx.AsyncClient, actor: Actor, room_id: int, message_id: int
) -> Json:
    """A top-level message or a comment, found through the REST listings."""
    for message in await history(client, actor, room_id):
        if message["messageId"] == message_id:
            return message
        if message["commentCount"]:
            for found in await comments(client, actor, message["messageId"]):
                if found["messageId"] == message_id:
                    return found
    raise AssertionError(f"message {message_id} not found in room {room_id}")


async def rooms_by_id(client: httpx.AsyncClient, actor: Actor) -> dict[int, Json]:
    rooms = body_of(await client.get("/api/v1/rooms", headers=actor.headers))["rooms"]
    assert isinstance(rooms, list)
    return {room["roomId"]: room for room in rooms}


async def room_of(client: httpx.AsyncClient, actor: Actor, room_id: int) -> Json:
    room = body_of(await client.get(f"/api/v1/rooms/{room_id}", headers=actor.headers))["room"]
    assert isinstance(room, dict)
    return room


def readers(message: Mapping[str, Any]) -> list[int]:
    return [read["userId"] for read in message["readTimestamps"]]


# the event log


async def latest_event_id(server: trio_events.RunningServer) -> int:
    return await server.services.store.read(lambda tx: tx.latest_event_id())


async def events_after(server: trio_events.RunningServer, mark: int) -> list[StoredEvent]:
    return await server.services.store.read(lambda tx: tx.events_after(mark, 1000))


async def client_events_after(server: trio_events.RunningServer, mark: int) -> list[StoredEvent]:
    """The events after ``mark`` that clients may receive (internal ones left out)."""
    return [e for e in await events_after(server, mark) if not is_internal(e.event_type)]


def payload(event: StoredEvent) -> Json:
    data = json.loads(event.payload)
    assert isinstance(data, dict)
    return data


def rendered_room(event: StoredEvent, user_id: int) -> Json:
    room = client_data(event, user_id)["room"]
    assert isinstance(room, dict)
    return room


def shape(events: Iterable[StoredEvent]) -> list[tuple[str, int | None, tuple[int, ...] | None]]:
    """(type, room, audience) of each event: what most assertions compare."""
    return [(e.event_type, e.room_id, e.audience) for e in events]


def _read_tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        names = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            name: sorted(connection.execute(f'SELECT * FROM "{name}"'), key=repr) for name in names
        }
    finally:
        connection.close()


async def database_rows(server: trio_events.RunningServer) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the server's SQLite database (the
    AUTOINCREMENT counters in sqlite_sequence included), read on a connection
    of its own."""
    path = server.services.config.sqlite_path
    return await trio.to_thread.run_sync(_read_tables, path)


async def snapshot(
    client: httpx.AsyncClient,
    server: trio_events.RunningServer,
    actor: Actor,
    room_ids: Iterable[int] = (),
) -> Json:
    """Everything a failed write must leave alone: the database itself, and
    what ``actor`` sees through the API."""
    rooms = await rooms_by_id(client, actor)
    state: Json = {
        "rooms": rooms,
        "latestEventId": await latest_event_id(server),
        "database": await database_rows(server),
    }
    for room_id in sorted({*rooms, *room_ids}):
        response = await client.get(f"/api/v1/rooms/{room_id}/messages", headers=actor.headers)
        state[f"history/{room_id}"] = (response.status_code, response.json())
        for message in response.json().get("messages", []):
            if message["commentCount"]:
                listed = await comments(client, actor, message["messageId"])
                state[f"comments/{message['messageId']}"] = listed
    return state
