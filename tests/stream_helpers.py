"""Helpers for the event-stream tests: running services, subscribers, WebSocket clients.

Two levels: the broker tests and the property test drive the services and the
broker in process (:func:`running_services`, :func:`wait_routed`,
:func:`drain`); the end-to-end tests talk to a real server with trio-websocket
(:func:`open_stream`, :class:`Stream`).  Every wait is bounded by the caller's
``fail_after``; the only polling loops wait for work the server finishes
asynchronously (the broker catching up, a stream unregistering).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Ping, Request

import trio_events
from trio_events.broker import Subscriber
from trio_events.config import Config
from trio_events.services import Services
from trio_events.store import open_store

from .helpers import make_config, serving
from .rest_helpers import Actor, admin_actor, create_room, latest_event_id, post, user_actors

Json = dict[str, Any]
POLL = 0.01
# Seconds a finished scenario's tasks get to end (a stream lingers for the
# client's close): a bound for a leak check, not a speed expectation.
TASKS_SETTLE = 10.0
REST_TASKS = ("hypercorn.", "quart_trio.", "trio_events.transport.http.IdleTimer")
# hypercorn's ping task sleeps a whole interval before it notices that its
# WebSocket closed, and keeps the connection (and server shutdown) waiting.
HEARTBEAT = 0.25


def stream_config(tmp_path: Path, **sections: Mapping[str, object]) -> Config:
    """``make_config`` with a short heartbeat, so closed streams end promptly."""
    events = {"heartbeat_interval": HEARTBEAT, **sections.pop("events", {})}
    return make_config(tmp_path, events=events, **sections)


# in process: services and the broker


@contextlib.asynccontextmanager
async def running_services(config: Config) -> AsyncIterator[Services]:
    """A store, the services over it and a running broker, for the block."""
    async with open_store(config) as store, trio.open_nursery() as nursery:
        svc = Services.build(config, store)
        await nursery.start(svc.broker.run)
        try:
            yield svc
        finally:
            nursery.cancel_scope.cancel()


def living_tasks() -> Counter[str]:
    """The names of every task of this ``trio.run``, server and clients alike,
    but those serving a REST request: they come and go with the client's
    keep-alive connection (one in flight, then an idle timer)."""
    names: Counter[str] = Counter()
    root = trio.lowlevel.current_root_task()
    assert root is not None
    pending = [root]
    while pending:
        task = pending.pop()
        if not task.name.startswith(REST_TASKS):
            names[task.name] += 1
        pending.extend(child for n in task.child_nurseries for child in n.child_tasks)
    return names


@contextlib.asynccontextmanager
async def no_task_left_behind() -> AsyncIterator[None]:
    """Fail unless, after the block, no kind of task (by name) has more
    instances than before it.

    Closing streams end their tasks asynchronously (the close handshake's
    linger), so the tasks get ``TASKS_SETTLE`` seconds to end; the failure
    names the extra ones.  Counting by name keeps a task that ended meanwhile
    (an idle keep-alive connection) from hiding one left behind.
    """
    before = living_tasks()
    yield
    with trio.move_on_after(TASKS_SETTLE):
        while living_tasks() - before:  # noqa: ASYNC110 - no event to wait for
            await trio.sleep(POLL)
    extra = living_tasks() - before
    assert not extra, f"tasks left behind: {dict(extra)}"


async def latest(svc: Services) -> int:
    return await svc.store.read(lambda tx: tx.latest_event_id())


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition``: for state that other tasks change without signalling
    (the broker's position, a stream unregistering).  Bounded by the caller."""
    while not condition():  # noqa: ASYNC110 - nothing to wait on but the state itself
        await trio.sleep(POLL)


async def wait_routed(svc: Services) -> int:
    """Wait until the broker has routed everything the log holds; return that id."""
    target = await latest(svc)
    await wait_until(lambda: svc.broker.last_event_id >= target)
    return target


def drain(subscriber: Subscriber) -> list[str]:
    """Every frame queued for ``subscriber`` right now."""
    frames: list[str] = []
    while True:
        try:
            frames.append(subscriber.receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return frames


def parse(frame: str) -> Json:
    """A server frame: exactly type, data and eventId."""
    data = json.loads(frame)
    assert isinstance(data, dict)
    assert set(data) == {"type", "data", "eventId"}, data
    assert isinstance(data["eventId"], int)
    return data


def room_id_of(frame: Json) -> int | None:
    """The room a client event is about, from its data."""
    data = frame["data"]
    if "roomId" in data:
        return int(data["roomId"])
    if "room" in data:
        return int(data["room"]["roomId"])
    if data.get("messages"):
        return int(data["messages"][0]["roomId"])
    return None


def summary(frames: Sequence[Json]) -> list[tuple[str, int | None]]:
    return [(f["type"], room_id_of(f)) for f in frames]


def assert_increasing(frames: Sequence[Json]) -> None:
    ids = [f["eventId"] for f in frames]
    assert ids == sorted(set(ids)), ids


# end to end: trio-websocket clients


def events_url(server: trio_events.RunningServer) -> str:
    return server.url.replace("http", "ws", 1) + "/api/v1/events"


def cookie(session_id: str) -> list[tuple[str, str]]:
    return [("Cookie", f"VirolaUserSessionId={session_id}")]


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


@attrs.define
class Stream:
    """One client stream: its Hello and the frames read so far, in order."""

    ws: WebSocketConnection
    hello: Json
    last_event_id: int

    async def frame(self) -> Json:
        """The next event frame; its eventId must exceed every earlier one."""
        message = await self.ws.get_message()
        assert isinstance(message, str)
        frame = parse(message)
        assert frame["eventId"] > self.last_event_id, (frame, self.last_event_id)
        self.last_event_id = frame["eventId"]
        return frame

    async def until(self, event_id: int) -> list[Json]:
        """Every frame up to and including ``event_id``, which this stream must receive."""
        frames: list[Json] = []
        while self.last_event_id < event_id:
            frames.append(await self.frame())
        assert self.last_event_id == event_id, f"event {event_id} was not delivered"
        return frames

    async def close_code(self) -> int:
        """Read (and drop) frames until the server closes; return its close code."""
        while True:
            try:
                await self.ws.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                break
        assert reason is not None
        return int(reason.code)


@contextlib.asynccontextmanager
async def open_stream(
    server: trio_events.RunningServer,
    headers: Sequence[tuple[str, str]],
    *,
    message_queue_size: int = 1,
) -> AsyncIterator[Stream]:
    """Open ``/api/v1/events`` with ``headers`` and read its Hello frame.

    trio-websocket 0.12 does not close the TCP stream after a close initiated
    by the server (``aclose`` returns early once a close reason is known), so
    the stream is closed here, after the WebSocket's own close.
    """
    connection: WebSocketConnection | None = None
    try:
        async with open_websocket_url(
            events_url(server),
            extra_headers=_encoded(headers),
            message_queue_size=message_queue_size,
            max_message_size=16 << 20,
        ) as ws:
            connection = ws
            message = await ws.get_message()
            assert isinstance(message, str)
            hello = json.loads(message)
            assert hello["type"] == "Hello", hello
            assert set(hello) == {"type", "data"}, hello
            yield Stream(ws, hello["data"], int(hello["data"]["eventId"]))
    finally:
        if connection is not None:
            await connection._stream.aclose()


def _encoded(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in headers]


async def rejection(
    server: trio_events.RunningServer, headers: Sequence[tuple[str, str]]
) -> ConnectionRejected:
    """The refusal of a handshake with ``headers`` (the test fails if it is accepted).

    The TCP stream is opened here so that it is closed here: trio-websocket
    leaves it open when the server rejects the upgrade.
    """
    parts = urlsplit(server.url)
    assert parts.hostname is not None
    stream = await trio.open_tcp_stream(parts.hostname, server.port)
    rejected: list[ConnectionRejected] = []
    try:
        async with trio.open_nursery() as nursery:
            await wrap_client_stream(
                nursery, stream, parts.netloc, "/api/v1/events", extra_headers=_encoded(headers)
            )
            nursery.cancel_scope.cancel()
    except* ConnectionRejected as group:
        rejected.extend(e for e in group.exceptions if isinstance(e, ConnectionRejected))
    finally:
        await stream.aclose()
    assert len(rejected) == 1, "the handshake was accepted"
    return rejected[0]


async def wait_subscribers(server: trio_events.RunningServer, count: int = 0) -> None:
    """Wait until the broker has exactly ``count`` subscribers (streams unregister late)."""
    await wait_until(lambda: server.services.broker.statistics().subscribers == count)


# end to end: several users with one stream each


@attrs.define
class World:
    """A running server, an admin and three users, each with an open stream.

    Every stream sees the public ``lobby``; :meth:`settle` posts a sentinel
    there, reads every stream up to it and returns what each received since
    the last settle, lobby frames left out.  Because a stream delivers in
    eventId order, a frame missing before the sentinel was never sent.
    """

    server: trio_events.RunningServer
    client: httpx.AsyncClient
    actors: dict[str, Actor]
    streams: dict[str, Stream]
    lobby: int

    async def settle(self) -> dict[str, list[Json]]:
        await post(self.client, self.actors["admin"], self.lobby, "sentinel")
        sentinel = await latest_event_id(self.server)
        received: dict[str, list[Json]] = {}
        for name, stream in self.streams.items():
            frames = await stream.until(sentinel)
            received[name] = [f for f in frames if room_id_of(f) != self.lobby]
        return received


@contextlib.asynccontextmanager
async def world(config: Config) -> AsyncIterator[World]:
    """A :class:`World` for the block; afterwards every stream must be unregistered."""
    async with serving(config) as (server, client):
        async with contextlib.AsyncExitStack() as stack:
            admin = await admin_actor(client)
            alice, bob, carol = await user_actors(client, server, "alice", "bob", "carol")
            lobby = await create_room(client, admin, "lobby", "Public")
            actors = {"admin": admin, "alice": alice, "bob": bob, "carol": carol}
            streams = {
                name: await stack.enter_async_context(
                    open_stream(server, list(actor.headers.items()))
                )
                for name, actor in actors.items()
            }
            yield World(server, client, actors, streams, lobby)
        await wait_subscribers(server, 0)


# end to end: comparing what each user received

CREATED, UPDATED, DELETED = "TextMessagesCreated", "TextMessagesUpdated", "TextMessageDeleted"
ROOM_CREATED, ROOM_UPDATED, ROOM_DELETED = "RoomCreated", "RoomUpdated", "RoomDeleted"
NAMES = ("admin", "alice", "bob", "carol")


def only(got: dict[str, list[Json]], **expected: list[tuple[str, int]]) -> None:
    """Each named user received exactly ``expected[name]``; the others nothing."""
    assert {name: summary(got[name]) for name in NAMES} == {
        name: expected.get(name, []) for name in NAMES
    }


def rooms(got: dict[str, list[Json]], field: str, kind: str = ROOM_UPDATED) -> dict[str, Any]:
    """``field`` of the room in each user's first ``kind`` event."""
    return {
        name: next(f["data"]["room"][field] for f in frames if f["type"] == kind)
        for name, frames in got.items()
        if any(f["type"] == kind for f in frames)
    }


def message_fields(frame: Json, *fields: str) -> list[tuple[object, ...]]:
    return [tuple(m[f] for f in fields) for m in frame["data"]["messages"]]


async def ignore_pings(
    server: trio_events.RunningServer, headers: Sequence[tuple[str, str]], seconds: float
) -> tuple[int, int | None]:
    """Open a stream with a raw wsproto client that never answers a ping; return
    how many pings arrived within ``seconds`` and the close code, if the server closed."""
    parts = urlsplit(server.url)
    assert parts.hostname is not None
    ws = WSConnection(ConnectionType.CLIENT)
    request = Request(host=parts.netloc, target="/api/v1/events", extra_headers=_encoded(headers))
    pings, code = 0, None
    stream = await trio.open_tcp_stream(parts.hostname, server.port)
    try:
        await stream.send_all(ws.send(request))
        with trio.move_on_after(seconds):
            while code is None:
                data = await stream.receive_some()
                if not data:
                    break
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Ping):
                        pings += 1  # and no Pong goes back
                    elif isinstance(event, CloseConnection):
                        code = event.code
    finally:
        await stream.aclose()
    return pings, code


@contextlib.asynccontextmanager
async def bearer_stream(
    url: str, token: str, since: int | None
) -> AsyncIterator[tuple[WebSocketConnection, Json]]:
    """A stream at ``url`` (``.../api/v1/events``) with a bearer token, resumed
    from ``since`` if given; yields it and its Hello data, reads nothing more.

    trio-websocket leaves the TCP stream open after an abnormal close, so it
    is closed here.
    """
    if since is not None:
        url += f"?since={since}"
    headers = [(b"Authorization", f"Bearer {token}".encode())]
    connection: WebSocketConnection | None = None
    try:
        async with open_websocket_url(
            url, extra_headers=headers, message_queue_size=0, max_message_size=16 << 20
        ) as ws:
            connection = ws
            hello = json.loads(await ws.get_message())
            assert hello["type"] == "Hello", hello
            yield ws, hello["data"]
    finally:
        if connection is not None:
            await connection._stream.aclose()
