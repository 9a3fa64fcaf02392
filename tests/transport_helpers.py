"""Helpers for the transport tests: raw TCP requests and a raw wsproto client.

The transport tests look at bytes a library would hide (status lines, a
close frame's code, a Pong's payload, the moment a socket closes), so they
talk to the server over plain Trio streams.  :func:`read_response` parses one
HTTP/1.1 response and keeps whatever follows it; :class:`RawWs` drives a
client-side ``wsproto.WSConnection`` over any stream.  Every wait is bounded
by the caller's ``fail_after``.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
import httpx
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

import trio_events

from .rest_helpers import Actor, body_of

Json = dict[str, Any]
EVENTS = "/api/v1/events"
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


async def connect(server: trio_events.RunningServer) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", server.port)


def request_head(
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
    host: str = "127.0.0.1",
) -> bytes:
    """A request head with ``Host`` first and ``headers`` as given."""
    lines = [f"{method} {target} {version}", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def upgrade_headers(
    *extra: tuple[str, str], key: str | None = WS_KEY, version: str | None = "13"
) -> list[tuple[str, str]]:
    """The headers of a WebSocket upgrade; ``None`` leaves a header out."""
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    if key is not None:
        headers.append(("Sec-WebSocket-Key", key))
    if version is not None:
        headers.append(("Sec-WebSocket-Version", version))
    return [*headers, *extra]


@attrs.frozen
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Json:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data


def _head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ")
    assert version == "HTTP/1.1", status_line
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status), headers


async def read_response(stream: trio.abc.Stream, buffer: bytes = b"") -> tuple[RawResponse, bytes]:
    """One response (``Content-Length`` framed, or up to EOF) and the bytes after it."""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some()
        assert chunk, f"connection closed before a response head: {buffer!r}"
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status, headers = _head(head)
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = await stream.receive_some()
            assert chunk, "connection closed inside a response body"
            rest += chunk
        return RawResponse(status, headers, rest[:length]), rest[length:]
    assert "transfer-encoding" not in headers, headers
    while chunk := await stream.receive_some():
        rest += chunk
    return RawResponse(status, headers, rest), b""


def parse_response(data: bytes) -> RawResponse:
    """The one complete, ``Content-Length`` framed response that ``data`` holds."""
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, f"no complete response head in {data[:200]!r}"
    status, headers = _head(head)
    assert int(headers["content-length"]) == len(body), (headers, body[:200])
    return RawResponse(status, headers, body)


def assert_json_error(response: RawResponse, status: int) -> str:
    """``response`` is ``status`` in the contract's error format; its errorText."""
    assert response.status == status, response
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["httpStatusCode"] == status, body
    assert set(body) == {"errorText", "httpStatusCode"}, body
    assert isinstance(body["errorText"], str)
    assert body["errorText"], body
    return body["errorText"]


async def closed_after(stream: trio.abc.Stream) -> float:
    """Discard what arrives until the server closes the connection; return how long it took."""
    started = trio.current_time()
    try:
        while await stream.receive_some():
            pass
    except trio.BrokenResourceError:
        pass  # a reset is a close too
    return trio.current_time() - started


async def dropped_after(stream: trio.abc.Stream, gap: float = 0.02) -> float:
    """Seconds until the server has dropped the connection altogether.

    An end of stream is only the server's half-close (it may still be reading
    what the client sends), so this keeps sending a byte every ``gap``
    seconds until the kernel refuses: the server's socket is gone.
    """
    started = trio.current_time()
    try:
        while True:
            await stream.send_all(b"x")
            await trio.sleep(gap)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return trio.current_time() - started


async def bearer_token(client: httpx.AsyncClient, actor: Actor) -> str:
    token = body_of(await client.post("/api/v1/token", headers=actor.headers))["token"]
    assert isinstance(token, str)
    return token


@attrs.define
class RawWs:
    """A client WebSocket driven by wsproto over ``stream``.

    ``answer_pings`` sends the Pong for every server Ping it reads (and counts
    them in ``pings``); ``closed`` is the close code once the server closed.
    """

    stream: trio.abc.Stream
    ws: WSConnection
    buffer: bytes = b""
    answer_pings: bool = True
    pings: int = 0
    closed: int | None = None
    _events: deque[Event] = attrs.Factory(deque)

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def event(self) -> Event | None:
        """The next event; None when the connection ended without one."""
        while not self._events:
            if self.buffer:
                data, self.buffer = self.buffer, b""
            else:
                try:
                    data = bytes(await self.stream.receive_some())
                except trio.BrokenResourceError:
                    data = b""
            if not data:
                return None
            self.ws.receive_data(data)
            self._events.extend(self.ws.events())
        event = self._events.popleft()
        if isinstance(event, Ping):
            self.pings += 1
            # (a Ping read together with the server's Close that followed it
            # cannot be answered any more: the connection is already closing)
            if self.answer_pings and self.ws.state is ConnectionState.OPEN:
                await self.send(event.response())
        elif isinstance(event, CloseConnection):
            self.closed = event.code
        return event

    async def text(self) -> str:
        """The next text message, whole (wsproto hands a large one over in parts)."""
        parts: list[str] = []
        while True:
            event = await self.event()
            assert event is not None, "the connection ended"
            assert not isinstance(event, CloseConnection), f"closed with {event.code}"
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts)

    async def frame(self) -> Json:
        data = json.loads(await self.text())
        assert isinstance(data, dict)
        return data

    async def close_code(self) -> int | None:
        """Read until the server's close frame (its code) or the end of the stream (None)."""
        while self.closed is None:
            if await self.event() is None:
                break
        return self.closed


async def handshake(
    stream: trio.abc.Stream, headers: Sequence[tuple[str, str]], buffer: bytes = b""
) -> RawWs:
    """Upgrade ``stream`` to a WebSocket on ``/api/v1/events``; it must be accepted."""
    ws = WSConnection(ConnectionType.CLIENT)
    extra = [(name.encode(), value.encode()) for name, value in headers]
    client = RawWs(stream, ws, buffer)
    await client.send(Request(host="127.0.0.1", target=EVENTS, extra_headers=extra))
    event = await client.event()
    assert not isinstance(event, RejectConnection), f"refused with {event.status_code}"
    assert isinstance(event, AcceptConnection), event
    return client


async def read_hello(client: RawWs) -> Json:
    hello = await client.frame()
    assert hello["type"] == "Hello", hello
    data = hello["data"]
    assert isinstance(data, dict)
    return data


@contextlib.asynccontextmanager
async def raw_ws(
    server: trio_events.RunningServer, headers: Sequence[tuple[str, str]]
) -> AsyncIterator[tuple[RawWs, Json]]:
    """A raw client on a new connection and the data of its Hello; closed after the block."""
    async with await connect(server) as stream:
        client = await handshake(stream, headers)
        yield client, await read_hello(client)
