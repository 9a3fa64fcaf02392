"""Connections served by hypercorn: REST, and event streams on a reused connection.

:func:`trio_events.transport.http.serve_http` hands every connection that is
not an event stream to :class:`HypercornConnection`, hypercorn's own
``TCPServer`` with the changes below.

**Closing.**  hypercorn closes a connection from whichever task asks for it.
When a response ends while its request's body is still arriving (a 401, 404
or 405 answered before the body was read), that task is the request's own,
and quart-trio cancels it as soon as hypercorn reports the request over,
which hypercorn does just before closing.  The close died at its first
checkpoint: the socket stayed open, h11 was never reset for a next request,
and the client's next request on the connection went unanswered for good.
(``Connection: close`` and HTTP/1.0 requests lost their close the same way.)
Here a close cannot be lost: it half-closes the socket at once (shielded),
lets the reader drain what the client still sends, and cancels the whole
connection ``LINGER`` seconds later at the latest.  Closing straight away
instead would make the kernel reset a connection with unread input, and a
reset can destroy the answer before the client reads it.

**Keeping the connection.**  The app's body wrapper
(:mod:`trio_events.api.body_window`) holds such an early answer until the
body has arrived, briefly, so that h11 can start the next request and the
connection stays usable; past that it adds ``Connection: close``.

**Errors.**  A request h11 cannot parse is answered in the contract's JSON
error format (hypercorn sends an empty body), and the connection closes.

**WebSocket close.**  Once a close frame went out on the ASGI event-stream
route (hypercorn's own 1009 for an oversized frame, or the app's close), the
app is told the stream ended and the connection closes like any other: the
peer has ``LINGER`` seconds to answer the close, and the stream's subscription
is released at once instead of when the peer finally hangs up.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import h11
import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.events import Data
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from wsproto.connection import ConnectionState

from ..errors import ApiError
from .websocket import _error_parts

__all__ = [
    "LINGER",
    "H11Connection",
    "HypercornConnection",
    "IdleTimer",
]

LINGER = 2.0
"""Seconds a connection the server closes keeps draining the client's input.

The client gets the end of the answer (and, over plain TCP, a FIN) at once;
a well-behaved one closes its side within a round trip.  2 s leaves room for
a slow network, and bounds what a client that never closes can hold."""

_PROTOCOL_ERRORS = {
    400: "Malformed HTTP request",
    501: "The request uses an HTTP feature this server does not implement",
}

_CLOSING = {ConnectionState.LOCAL_CLOSING, ConnectionState.CLOSED}
_DONE_SENDING = {h11.IDLE, h11.DONE, h11.MUST_CLOSE, h11.CLOSED}


class IdleTimer:
    """hypercorn's per-connection idle timer, started so that it survives.

    hypercorn restarts the keep-alive timer from inside the request's task
    with ``await nursery.start(...)``; quart-trio cancels that task's scope
    as the response completes, which takes the freshly started timer with it,
    so idle keep-alive connections (and a slowly trickling second request
    head) were never cut off.  ``start_soon`` runs the timer in the
    connection's nursery, out of reach of the caller's cancellation.
    Same interface as ``hypercorn.trio.worker_context.TrioSingleTask``.
    """

    def __init__(self) -> None:
        self._scope: trio.CancelScope | None = None

    async def restart(self, task_group: Any, action: Callable[[], Awaitable[None]]) -> None:
        await self.stop()
        scope = self._scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await action()

        task_group._nursery.start_soon(run)

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None


class HypercornConnection(TCPServer):
    """hypercorn's handler of one connection, whose close cannot be lost (see the module)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.idle_task = IdleTimer()  # type: ignore[assignment]
        self.closing = False
        self._scope = trio.CancelScope()

    async def run(self) -> None:
        """hypercorn's connection, in a scope of our own.

        (Not the scope of hypercorn's task group: its ``__aexit__`` drops the
        nursery's verdict, so a cancellation caught there still escapes.)
        """
        with self._scope:
            await super().run()

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Closed):
            await self._close_soon()
        else:
            await super().protocol_send(event)

    async def _close_soon(self) -> None:
        """Half-close now and drop the connection within ``LINGER`` seconds.

        TLS has no half-close: there the connection is dropped at once when
        the client has nothing more to send, and lingers only while a request
        body or a WebSocket close may still be coming.  Called from any task of
        the connection, including one being cancelled: nothing here may
        depend on reaching a checkpoint.
        """
        if not self.closing:
            self.closing = True
            with trio.CancelScope(shield=True):
                half_closed = await self._send_eof()
            their_state = getattr(self.protocol.protocol.connection, "their_state", None)
            linger = LINGER if half_closed or their_state not in _DONE_SENDING else 0.0
            self._scope.deadline = min(self._scope.deadline, trio.current_time() + linger)
        await self.protocol.handle(Closed())

    async def _send_eof(self) -> bool:
        """Half-close the connection; False over TLS, which cannot.

        Under hypercorn's send lock: the stream refuses (``BusyResourceError``)
        a send that overlaps the half-close, and the read loop may be writing
        (a WebSocket close answer) at this very moment.  A writer stuck on a
        client that reads nothing gets ``LINGER`` seconds; then the connection
        is dropped without the half-close.
        """
        lock = self.send_lock
        held = lock.statistics().owner is trio.lowlevel.current_task()  # a failed send
        with trio.move_on_after(LINGER):
            async with contextlib.nullcontext() if held else lock:
                try:
                    await self.stream.send_eof()
                except AttributeError:  # hypercorn's own test for TLS
                    return False
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        return True

    async def _read_data(self) -> None:
        """hypercorn's read loop, over :class:`H11Connection`; once closing, it only drains."""
        wrapper = self.protocol
        if isinstance(wrapper.protocol, H11Protocol):
            wrapper.protocol = H11Connection(
                wrapper.app,
                wrapper.config,
                wrapper.context,
                wrapper.task_group,
                wrapper.state,
                wrapper.ssl,
                wrapper.client,
                wrapper.server,
                wrapper.send,
            )
        while True:
            try:
                with trio.fail_after(self.config.read_timeout or math.inf):
                    data = bytes(await self.stream.receive_some(MAX_RECV))
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            if not self.closing:
                await self.protocol.handle(RawData(data))
            if not data:
                break
        await self.protocol.handle(Closed())


class H11Connection(H11Protocol):
    """hypercorn's HTTP/1.1 protocol, with our error format and WebSocket close."""

    async def _check_protocol(self, event: h11.Request) -> None:
        """Stay on HTTP/1.1: no switch to HTTP/2.

        hypercorn switches a connection to its HTTP/2 protocol on an
        ``Upgrade: h2c`` request or on the HTTP/2 preface, and none of this
        module's connection handling (closes that cannot be lost, early
        answers, the error format) is HTTP/2's.  TLS offers only ``http/1.1``
        in ALPN already; here an h2c upgrade is ignored, which a server may
        do (RFC 7230 6.7: the request is answered over HTTP/1.1), and the
        preface is answered as the HTTP/1.1 request it parses as.
        """

    async def _send_error_response(self, status_code: int) -> None:
        if status_code == 431:
            text = f"The request head is larger than {self.config.h11_max_incomplete_size} bytes"
        else:
            text = _PROTOCOL_ERRORS.get(status_code, "Malformed HTTP request")
        headers, body = _error_parts(ApiError(text, status_code))
        reason = HTTPStatus(status_code).phrase.encode()  # h11 hints 400, 431 and 501 only
        response = h11.Response(
            status_code=status_code,
            headers=[*headers, *self.config.response_headers("h11")],
            reason=reason,
        )
        await self._send_h11_event(response)
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    async def stream_send(self, event: StreamEvent) -> None:
        await super().stream_send(event)
        if isinstance(event, Data) and isinstance(self.stream, WSStream):
            ws = getattr(self.stream, "connection", None)  # set once accepted
            if ws is not None and ws.state in _CLOSING:
                await self.send(Closed())
