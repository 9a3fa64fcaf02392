"""Helpers for the resume, catch-up and retention tests.

:func:`open_resume` opens ``/api/v1/events?since=N`` with trio-websocket and
reads the Hello; :func:`replayed` reads the frames Hello announced as replayed.
:func:`oracle` is the independent expectation: it runs an access table
*forwards* from an empty one over the whole (untrimmed) log and keeps what the
user could see at each commit, so it never uses ``AclStore.unapply``.
:func:`during_replay` and :func:`before_later_reads` put an action inside a
resume's replay, so a race with it happens every time, not by chance.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import (
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
)

import trio_events
from trio_events import replay, streams
from trio_events.acl import AclStore, recipients
from trio_events.events import encode_for, is_internal
from trio_events.model import StoredEvent
from trio_events.replay import Replay
from trio_events.store import Store, Tx

from .stream_helpers import Json, Stream, events_url
from .transport_helpers import EVENTS, RawWs, connect, read_hello, read_response, request_head

Headers = Sequence[tuple[str, str]]


def _encoded(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in headers]


@contextlib.asynccontextmanager
async def open_resume(
    server: trio_events.RunningServer, headers: Headers, since: int | str | None
) -> AsyncIterator[Stream]:
    """Open the events stream with ``?since=`` and read its Hello (see stream_helpers)."""
    url = events_url(server) if since is None else f"{events_url(server)}?since={since}"
    connection: WebSocketConnection | None = None
    try:
        async with open_websocket_url(
            url, extra_headers=_encoded(headers), message_queue_size=1, max_message_size=16 << 20
        ) as ws:
            connection = ws
            message = await ws.get_message()
            assert isinstance(message, str)
            hello = json.loads(message)
            assert hello["type"] == "Hello", hello
            assert set(hello) == {"type", "data"}, hello
            yield Stream(ws, hello["data"], 0)
    finally:
        if connection is not None:
            await connection._stream.aclose()


async def raw(stream: Stream) -> Json:
    """The next frame as it is, without the checks of ``Stream.frame``."""
    message = await stream.ws.get_message()
    assert isinstance(message, str)
    frame = json.loads(message)
    assert isinstance(frame, dict)
    return frame


async def replayed(stream: Stream) -> list[Json]:
    """The frames Hello announced as replayed, each at most Hello's eventId."""
    frames = [await stream.frame() for _ in range(int(stream.hello["replayed"]))]
    assert all(f["eventId"] <= stream.hello["eventId"] for f in frames), frames
    return frames


async def rejection_since(
    server: trio_events.RunningServer, headers: Headers, query: str
) -> ConnectionRejected:
    """The refusal of ``/api/v1/events?<query>`` (fails if the upgrade is accepted)."""
    parts = urlsplit(server.url)
    assert parts.hostname is not None
    stream = await trio.open_tcp_stream(parts.hostname, server.port)
    rejected: list[ConnectionRejected] = []
    try:
        async with trio.open_nursery() as nursery:
            await wrap_client_stream(
                nursery,
                stream,
                parts.netloc,
                f"/api/v1/events?{query}",
                extra_headers=_encoded(headers),
            )
            nursery.cancel_scope.cancel()
    except* ConnectionRejected as group:
        rejected.extend(e for e in group.exceptions if isinstance(e, ConnectionRejected))
    finally:
        await stream.aclose()
    assert len(rejected) == 1, f"the handshake with ?{query} was accepted"
    return rejected[0]


def rejected_json(rejected: ConnectionRejected, status: int) -> Json:
    assert rejected.status_code == status, (rejected.status_code, rejected.body)
    assert rejected.body is not None
    body = json.loads(rejected.body)
    assert isinstance(body, dict)
    assert body["httpStatusCode"] == status
    assert isinstance(body["errorText"], str)
    assert body["errorText"]
    return body


async def upgrade(
    server: trio_events.RunningServer, headers: Headers, query: str, reused: bool
) -> tuple[int, Json]:
    """Upgrade ``/api/v1/events?<query>`` on a new connection (the transport
    that owns the socket) or, when ``reused``, after a ``/healthz`` on the same
    connection (the quart-trio route); return 101 and the Hello's data, or
    the refusal's status and JSON body."""
    async with await connect(server) as stream:
        buffer = b""
        if reused:
            await stream.send_all(request_head("/healthz"))
            first, buffer = await read_response(stream)
            assert first.status == 200
        client = RawWs(stream, WSConnection(ConnectionType.CLIENT), buffer)
        target = f"{EVENTS}?{query}"
        await client.send(Request(host="127.0.0.1", target=target, extra_headers=_encoded(headers)))
        answer = await client.event()
        if isinstance(answer, RejectConnection):
            body = b""
            while answer.has_body:
                data = await client.event()
                assert isinstance(data, RejectData), data
                body += data.data
                if data.body_finished:
                    break
            error = json.loads(body)
            assert isinstance(error, dict)
            return answer.status_code, error
        assert isinstance(answer, AcceptConnection), answer
        hello = await read_hello(client)
        await client.send(CloseConnection(code=1000))
        return 101, hello


def _after(event_id: int, tx: Tx) -> list[StoredEvent]:
    return tx.events_after(event_id, 1000)


async def whole_log(store: Store) -> list[StoredEvent]:
    events: list[StoredEvent] = []
    while True:
        after = events[-1].event_id if events else 0
        batch = await store.read(partial(_after, after))
        if not batch:
            return events
        events.extend(batch)


async def oracle(
    store: Store, user_id: int, since: int, until: int, before: Sequence[StoredEvent] = ()
) -> list[Json]:
    """What ``user_id`` should get for (since, until], the table run forwards from 0.

    ``before`` is the log as it was before retention trimmed it, if it did:
    the events up to its last come from there, later ones from the store."""
    acl = AclStore()
    frames: list[Json] = []
    known = before[-1].event_id if before else 0
    later = [event for event in await whole_log(store) if event.event_id > known]
    for event in [*before, *later]:
        if event.event_id > until:
            break
        acl.apply(event)
        if event.event_id <= since or is_internal(event.event_type):
            continue
        if recipients(event, acl, (user_id,)):
            frames.append(json.loads(encode_for(event, user_id)))
    return frames


def kinds(frames: Sequence[Json]) -> list[tuple[str, int | None]]:
    """(type, message ids or room id) of each frame, for readable assertions."""
    out: list[tuple[str, int | None]] = []
    for frame in frames:
        data = frame["data"]
        if "messages" in data:
            out.extend((frame["type"], m["messageId"]) for m in data["messages"])
        elif "room" in data:
            out.append((frame["type"], data["room"]["roomId"]))
        else:
            out.append((frame["type"], data.get("roomId", data.get("messageId"))))
    return out


async def latest_id(server: trio_events.RunningServer) -> int:
    return await server.services.store.read(lambda tx: tx.latest_event_id())


async def trimmed_through(store: Store) -> int:
    return await store.read(lambda tx: tx.trimmed_through())


Action = Callable[[], Awaitable[None]]


def during_replay(monkeypatch: pytest.MonkeyPatch, action: Action) -> list[int]:
    """Run ``action`` in every later stream resume, after it subscribed (at
    Hello's eventId H) and before its replay was read, and again after the
    replay was computed but before any frame was sent.  Return the list of
    each resume's H, filled as resumes happen.
    """
    original = replay.plan_replay  # what trio_events.streams calls
    hellos: list[int] = []

    async def plan_replay(
        store: Store, acl: AclStore, user_id: int, since: int, until: int, limit: int
    ) -> Replay:
        hellos.append(until)
        await action()
        planned = await original(store, acl, user_id, since, until, limit)
        await action()
        return planned

    monkeypatch.setattr(streams, "plan_replay", plan_replay)
    return hellos


def before_later_reads(monkeypatch: pytest.MonkeyPatch, store: Store, action: Action) -> list[int]:
    """Run ``action`` before each read of a replay after its first (one batch
    of ``replay.BATCH`` events each); return the ``after`` of each such read."""
    original = store.read
    reads: list[int] = []

    async def read(fn: Callable[[Tx], object]) -> object:
        if isinstance(fn, partial) and fn.func is replay._between:
            reads.append(fn.args[0])
            await action()
        return await original(fn)

    monkeypatch.setattr(store, "read", read)
    return reads
