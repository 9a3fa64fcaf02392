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
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

import trio_events
from trio_events.broker import Subscriber
from trio_events.config import Config
from trio_events.services import Services
from trio_events.store import open_store

Json = dict[str, Any]
POLL = 0.01


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


async def latest(svc: Services) -> int:
    return await svc.store.read(lambda tx: tx.latest_event_id())


async def wait_routed(svc: Services) -> int:
    """Wait until the broker has routed everything the log holds; return that id."""
    target = await latest(svc)
    while svc.broker.last_event_id < target:
        await trio.sleep(POLL)
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
                assert exc.reason is not None
                return int(exc.reason.code)


@contextlib.asynccontextmanager
async def open_stream(
    server: trio_events.RunningServer,
    headers: Sequence[tuple[str, str]],
    *,
    message_queue_size: int = 1,
) -> AsyncIterator[Stream]:
    """Open ``/api/v1/events`` with ``headers`` and read its Hello frame."""
    extra = [(name.encode(), value.encode()) for name, value in headers]
    async with open_websocket_url(
        events_url(server),
        extra_headers=extra,
        message_queue_size=message_queue_size,
        max_message_size=16 << 20,
    ) as ws:
        message = await ws.get_message()
        assert isinstance(message, str)
        hello = json.loads(message)
        assert hello["type"] == "Hello", hello
        assert set(hello) == {"type", "data"}, hello
        yield Stream(ws, hello["data"], int(hello["data"]["eventId"]))


async def wait_subscribers(server: trio_events.RunningServer, count: int = 0) -> None:
    """Wait until the broker has exactly ``count`` subscribers (streams unregister late)."""
    while server.services.broker.statistics().subscribers != count:
        await trio.sleep(POLL)
