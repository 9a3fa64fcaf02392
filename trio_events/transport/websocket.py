"""Event streams on a socket we own: the handshake and frames with wsproto.

wsproto is sans-I/O: it turns bytes into events and events into bytes, and
this module moves the bytes.  Compared with the ASGI route this gives the
stream real WebSocket pings (so a silent peer is closed on time), control of
the close handshake, and no per-message ASGI machinery.

:func:`serve_events` runs one connection: it finishes the handshake that the
dispatcher started reading, refuses it with an HTTP error in the contract's
format, or accepts it and hands a :class:`WsprotoTransport` to
:func:`trio_events.connection.run_stream`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Sequence
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..broker import FLUSH, Written
from ..connection import MessageTooBig, PeerClosed, run_stream
from ..errors import ApiError, RateLimited
from ..services import Services
from ..streams import open_stream

__all__ = ["FrameCache", "WsprotoTransport", "error_response", "serve_events", "text_frame"]

log = logging.getLogger("trio_events.stream")

RECEIVE_SIZE = 65536
FRAME_TIMEOUT = 5.0  # seconds a peer gets to take one frame once it is started
MIN_RATE = 64 * 1024  # bytes/s a peer must at least take for a large write
LINGER = 1.0  # seconds to wait for the peer's close after ours (RFC 6455 7.1.1)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame (RFC 6455 section 5.2)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 1 << 16:
        header = bytes((0x81, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + length.to_bytes(8, "big")
    return header + payload


class FrameCache:
    """Wire bytes of recently sent frames, shared by every stream of a server.

    The broker hands the *same* ``str`` object to every recipient of an
    event, so keying by identity finds it; the entry holds the ``str`` so its
    id cannot be reused while cached.  Bounded: the oldest entries go first.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._frames: dict[int, tuple[str, bytes]] = {}
        self.hits = 0
        self.misses = 0

    def wire(self, frame: str) -> bytes:
        entry = self._frames.get(id(frame))
        if entry is not None and entry[0] is frame:
            self.hits += 1
            return entry[1]
        self.misses += 1
        data = text_frame(frame.encode())
        if len(self._frames) >= self._size:
            del self._frames[next(iter(self._frames))]
        self._frames[id(frame)] = (frame, data)
        return data


class WsprotoTransport:
    """:class:`~trio_events.connection.Transport` over a Trio stream and wsproto.

    ``send`` may be called from two tasks (the sender, and the reader for
    pongs and pings); a lock keeps their bytes from interleaving.  Only the
    reader calls ``receive``, which also answers pings and notices pongs.
    It returns after each control frame so that the reader counts it against
    the client frame rate, and answers a ping only when called again: a ping
    over the rate gets the 1008 close, not a pong.

    It holds wsproto's frame-level :class:`~wsproto.connection.Connection`
    only; the handshake machinery (``WSConnection`` and its h11 state) is
    dropped once the upgrade is accepted: an open stream keeps nothing of it.
    """

    supports_ping = True

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: Connection,
        max_message: int,
        cache: FrameCache | None = None,
    ) -> None:
        self._cache = cache or FrameCache()
        self._stream = stream
        self._ws = ws
        self._max_message = max_message
        self._send_lock = trio.Lock()
        self.awaiting_pong = False
        self.control_frames = 0
        self._ping_payload = b""
        self._ping: Ping | None = None  # the client's, to answer
        self._parts: list[Any] = []
        self._size = 0
        self._messages: list[str | bytes] = []
        self._pending = b""
        self._broken = False
        # The raw socket, for the fast path (plain TCP only; TLS always queues).
        socket = getattr(stream, "socket", None)
        self._fd: int | None = socket.fileno() if socket is not None else None

    def try_write_now(self, frames: Sequence[str]) -> Written:
        """The broker's fast path: write ``frames`` now if the socket takes them.

        Never blocks.  Refuses (``NOTHING``) while another write is in progress
        or bytes of an earlier frame are still pending, so frames never
        interleave.  A partial write keeps the rest in ``_pending`` for the
        next write, which always sends it first.
        """
        if self._fd is None or self._broken or self._send_lock.locked() or self._pending:
            return Written.NOTHING
        if self._ws.state is not ConnectionState.OPEN:
            return Written.NOTHING
        wire = self._cache.wire
        data = wire(frames[0]) if len(frames) == 1 else b"".join(wire(f) for f in frames)
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            return Written.NOTHING
        except OSError:
            self._broken = True  # the reader or the next write reports it
            return Written.ALL
        if sent == len(data):
            return Written.ALL
        self._pending = data[sent:]
        return Written.PART

    async def _write(self, data: bytes) -> None:
        """Write whole frames only.

        A write cancelled half-way would leave a partial frame on the wire and
        corrupt everything after it, so each write is shielded from
        cancellation and bounded by ``FRAME_TIMEOUT`` instead; a peer that
        does not take one frame in that time has its connection dropped.
        """
        async with self._send_lock:
            if self._broken:
                raise PeerClosed
            if self._pending:  # the rest of a frame the fast path started
                data, self._pending = self._pending + data, b""
            with trio.CancelScope(shield=True) as scope:
                # FRAME_TIMEOUT, plus time for a large batch at a modest rate
                scope.deadline = trio.current_time() + FRAME_TIMEOUT + len(data) / MIN_RATE
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._broken = True
                    raise PeerClosed from exc
            if scope.cancelled_caught:
                self._broken = True
                raise PeerClosed

    async def send(self, frame: str) -> None:
        """One frame of this stream only (its Hello, a Pong): framed here, not
        kept in the shared cache, where it would only push out shared frames."""
        if self._ws.state is not ConnectionState.OPEN:
            raise PeerClosed
        await self._write(text_frame(frame.encode()))

    async def send_many(self, frames: Sequence[str]) -> None:
        """Write the frames in one ``send_all``.

        Server frames are not masked and no extension is negotiated, so a
        frame's bytes are the same for every recipient: they come from the
        shared :class:`FrameCache`, encoded by the first stream that needs them.
        """
        if self._ws.state is not ConnectionState.OPEN:
            raise PeerClosed
        wire = self._cache.wire
        data = b"".join(b"" if f is FLUSH else wire(f) for f in frames)
        await self._write(data)  # pending bytes of a started frame go first

    def _encode(self, event: Ping | Pong | CloseConnection) -> bytes:
        """A control frame, or PeerClosed when the connection is past OPEN."""
        if self._ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            raise PeerClosed
        try:
            return self._ws.send(event)
        except LocalProtocolError as exc:
            raise PeerClosed from exc

    async def send_ping(self) -> None:
        if self._ws.state is not ConnectionState.OPEN:
            raise PeerClosed
        self._ping_payload = os.urandom(4)
        self.awaiting_pong = True
        await self._write(self._encode(Ping(payload=self._ping_payload)))

    async def receive(self, deadline: float = math.inf) -> str | bytes | None:
        if self._ping is not None:  # counted by the caller, who came back for more
            ping, self._ping = self._ping, None
            await self._write(self._encode(ping.response()))
        while not self._messages:
            if await self._handle_events():
                return None  # a control frame: the caller counts it
            data = None
            # Only the wait for bytes has the deadline: receive_some is safe to
            # cancel (nothing is consumed), and events are handled outside it.
            with trio.move_on_at(deadline):
                try:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise PeerClosed from exc
            if data is None:
                return None
            if not data:
                raise PeerClosed
            try:
                self._ws.receive_data(bytes(data))
            except RemoteProtocolError as exc:
                raise PeerClosed from exc
            if await self._handle_events():
                return None
        return self._messages.pop(0)

    async def _handle_events(self) -> bool:
        """Handle what wsproto parsed, up to and including the first ping or
        pong (True: one came; what follows waits in wsproto for the next call)."""
        for event in self._ws.events():
            if isinstance(event, Ping | Pong):
                self._control(event)
                return True
            await self._handle(event)
        return False

    def _control(self, event: Ping | Pong) -> None:
        """Take a ping (the next receive answers it) or a pong.  Each counts as
        a client frame, except the pong the heartbeat waits for."""
        awaited = self.awaiting_pong and bytes(event.payload) == self._ping_payload
        if isinstance(event, Pong) and awaited:
            self.awaiting_pong = False
            return
        self.control_frames += 1
        if isinstance(event, Ping):
            self._ping = event

    async def _handle(self, event: object) -> None:
        if isinstance(event, TextMessage | BytesMessage):
            self._size += len(event.data)
            if self._size > self._max_message:
                raise MessageTooBig
            self._parts.append(event.data)
            if event.message_finished:
                parts, self._parts, self._size = self._parts, [], 0
                if isinstance(event, TextMessage):
                    self._messages.append("".join(parts))
                else:
                    self._messages.append(b"".join(parts))
        elif isinstance(event, CloseConnection):
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                await self._write(self._encode(event.response()))
            raise PeerClosed

    async def close(self, code: int, reason: str) -> None:
        """Send our close frame, then linger for the peer's before hanging up.

        Closing a socket with unread input makes the kernel reset it and drop
        what is still queued for sending, such as the last frames of a 1001
        drain and the close frame itself; so unless the peer is gone, we shut
        our side for writing and read (and drop) until its close or EOF, for
        at most ``LINGER`` seconds.
        """
        try:
            self._fd = None  # no more fast-path writes to a descriptor about to close
            if self._ws.state is ConnectionState.OPEN and not self._broken:
                await self._write(self._encode(CloseConnection(code=code, reason=reason)))
                await self._linger()
        finally:
            await self._stream.aclose()

    async def _linger(self) -> None:
        with trio.move_on_after(LINGER):
            send_eof = getattr(self._stream, "send_eof", None)
            if send_eof is not None:  # plain TCP; TLS has no half-close
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await send_eof()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while await self._stream.receive_some(RECEIVE_SIZE):
                    pass


def _error_parts(
    error: ApiError, extra: list[tuple[bytes, bytes]] | None = None
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"errorText": error.text, "httpStatusCode": error.status}).encode()
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *(extra or []),
    ]
    if isinstance(error, RateLimited):
        headers.append((b"retry-after", str(error.retry_after).encode()))
    return headers, body


def error_response(error: ApiError, extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """A complete HTTP/1.1 error response in the contract's format, for a
    connection that will be closed after it."""
    headers, body = _error_parts(error, extra)
    reason = (
        HTTPStatus(error.status).phrase if error.status in HTTPStatus._value2member_map_ else ""
    )
    lines = [f"HTTP/1.1 {error.status} {reason}".encode()]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _reject(ws: WSConnection, error: ApiError) -> bytes:
    headers, body = _error_parts(error)
    return ws.send(
        RejectConnection(status_code=error.status, headers=headers, has_body=True)
    ) + ws.send(RejectData(data=body))


@attrs.define
class _Handshake:
    """A parsed upgrade request: what authorization needs, until accepted.

    Everything here is dropped on :meth:`accept` (wsproto's handshake state
    with its h11 connection, the headers, the cookies), so that an open
    stream keeps only the frame-level connection.
    """

    ws: WSConnection | None
    headers: dict[str, str]
    cookies: dict[str, str]
    since: list[str]  # each value of the query parameter

    def accept(self) -> tuple[bytes, Connection]:
        assert self.ws is not None
        response = self.ws.send(AcceptConnection())
        connection = self.ws.connection
        assert connection is not None
        self.ws, self.headers, self.cookies = None, {}, {}
        return response, connection


async def _read_handshake(stream: trio.abc.Stream, head: bytes) -> _Handshake | None:
    """Parse the upgrade request; answer a malformed one and return None."""
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(head)
        request = next(iter(ws.events()), None)
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        if isinstance(hint, RejectConnection):
            # wsproto's answer (its status and Sec-WebSocket-Version), with our body
            error = ApiError(f"Invalid WebSocket handshake: {exc}", hint.status_code)
            extra = [(n, v) for n, v in hint.headers if n.lower() != b"content-length"]
            await stream.send_all(error_response(error, extra))
        return None
    if not isinstance(request, Request):
        return None
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in request.extra_headers
    }
    headers["host"] = request.host
    cookies: dict[str, str] = {}
    try:
        jar = SimpleCookie(headers.get("cookie", ""))
        cookies = {name: morsel.value for name, morsel in jar.items()}
    except CookieError:
        pass
    since = parse_qs(urlsplit(request.target).query, keep_blank_values=True).get("since", [])
    return _Handshake(ws, headers, cookies, since)


async def serve_events(
    stream: trio.abc.Stream, head: bytes, svc: Services, remote: str, cache: FrameCache
) -> None:
    """Serve one events connection whose request head (and anything after) is ``head``."""
    handshake = await _read_handshake(stream, head)
    if handshake is None:
        return
    since = handshake.since
    try:
        async with open_stream(svc, handshake.headers, handshake.cookies, since) as start:
            response, connection = handshake.accept()
            await stream.send_all(response)
            user_id = start.principal.user_id
            log.info(
                "stream opened user=%s remote=%s since=%s replayed=%d",
                user_id,
                remote,
                ",".join(since) or "-",
                len(start.replay),
            )
            transport = WsprotoTransport(
                stream, connection, svc.config.events.max_client_frame, cache
            )
            verdict = await run_stream(
                transport, start.subscriber, start.hello, svc.config.events, replay=start.replay
            )
            svc.metrics.stream_closed(verdict.code, verdict.reason)
            log.info(
                "stream closed user=%s code=%s reason=%s",
                user_id,
                verdict.code if verdict.code is not None else "client",
                verdict.reason,
            )
    except ApiError as error:
        if handshake.ws is None:  # accepted already: not ours to answer
            raise
        log.info("stream refused status=%d remote=%s", error.status, remote)
        await stream.send_all(_reject(handshake.ws, error))
