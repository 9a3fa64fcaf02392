"""The listening socket: event streams to our transport, the rest to hypercorn.

Each accepted connection's request head is read here (bounded in size and
time: ``server.max_header_bytes`` and ``server.header_timeout``).  A
WebSocket upgrade of ``/api/v1/events`` is served by
:func:`trio_events.transport.websocket.serve_events`; any other request is
handed, with the bytes already read, to hypercorn's own connection handler
(:class:`~trio_events.transport.asgi.HypercornConnection`, which changes how
a connection closes and how h11's errors look), so REST requests see what
``hypercorn.trio.serve`` would give them.  Over TLS, ``server.header_timeout``
bounds the handshake and the first head together.

This re-creates the small part of ``hypercorn.trio.run.worker_serve`` that
owns the listeners (the ASGI lifespan, the worker context, graceful
shutdown) and uses hypercorn's ``TCPServer``, ``WorkerContext`` and
``Lifespan``.  Those are internal to hypercorn; the supported range is pinned
in ``setup.cfg`` and every integration test goes through them, so a change
fails loudly.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

from ..errors import HeaderTooLarge
from ..services import Services
from .asgi import LINGER, HypercornConnection
from .websocket import FrameCache, error_response, serve_events

__all__ = ["PrefixedStream", "is_events_upgrade", "serve_http"]

log = logging.getLogger("trio_events.server")

EVENTS_PATH = b"/api/v1/events"


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A stream that first yields bytes already read from it.

    Everything else (``socket``, TLS attributes, ``send_eof``) is the
    wrapped stream's, which is what hypercorn's ``TCPServer`` looks at.
    """

    def __init__(self, stream: Any, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            limit = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:limit], self._prefix[limit:]
            return data
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def is_events_upgrade(head: bytes) -> bool:
    """Whether a complete request head asks to upgrade ``/api/v1/events``."""
    request_line, _, rest = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET":
        return False
    if parts[1].partition(b"?")[0] != EVENTS_PATH:
        return False
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and value.strip().lower() == b"websocket":
            return True
    return False


async def _read_head(stream: trio.abc.Stream, max_head: int) -> bytes | None:
    """Bytes up to the end of the first request head; None if the peer left."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > max_head:
            return data  # too long: refused with 431
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
    return data


async def _refuse(stream: Any, response: bytes) -> None:
    """Send ``response``, then drain the client's input for up to ``LINGER``
    seconds before closing, so that no reset destroys the answer."""
    with (
        trio.move_on_after(LINGER),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_all(response)
        send_eof = getattr(stream, "send_eof", None)
        if send_eof is not None:  # plain TCP; TLS has no half-close
            await send_eof()
        while await stream.receive_some(65536):
            pass
    await trio.aclose_forcefully(stream)


def _peer(stream: Any) -> str:
    sock: Any = getattr(stream, "socket", None) or getattr(stream.transport_stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2]
    except (AttributeError, OSError):
        return "-"
    return f"{host}:{port}"


async def serve_http(
    app: Any,
    svc: Services,
    hc: HypercornConfig,
    ssl_context: ssl.SSLContext | None,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    listen_fds: Sequence[int] = (),
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen, dispatch every connection, and stop gracefully when triggered.

    ``listen_fds``: listening sockets inherited from a ``--workers``
    supervisor, used instead of binding ``hc.bind``.
    """
    asgi = wrap_app(app, hc.wsgi_max_body_size, "asgi")
    state: dict[str, Any] = {}
    lifespan = Lifespan(asgi, hc, state)
    context = WorkerContext(None)
    frames = FrameCache()  # wire bytes shared by all of this server's streams
    head_timeout = svc.config.server.header_timeout
    max_head = svc.config.server.max_header_bytes
    host, _, port = hc.bind[0].rpartition(":")
    listeners: list[Any]
    if listen_fds:
        listeners = [
            trio.SocketListener(trio.socket.from_stdlib_socket(socket.socket(fileno=fd)))
            for fd in listen_fds
        ]
    else:
        listeners = list(await trio.open_tcp_listeners(int(port), host=host.strip("[]") or None))
    if ssl_context is not None:
        listeners = [trio.SSLListener(lst, ssl_context, https_compatible=True) for lst in listeners]
    scheme = "https" if ssl_context is not None else "http"
    urls = []
    for listener in listeners:
        sock = listener.transport_listener.socket if ssl_context else listener.socket
        address = sock.getsockname()
        shown = f"[{address[0]}]" if ":" in address[0] else address[0]
        urls.append(f"{scheme}://{shown}:{address[1]}")

    async def handle(stream: Any) -> None:
        head = None
        try:
            with trio.move_on_after(head_timeout):
                if ssl_context is not None:
                    await stream.do_handshake()
                head = await _read_head(stream, max_head)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        if head is None:
            await trio.aclose_forcefully(stream)
            return
        end = head.find(b"\r\n\r\n")
        if end < 0 or end + 4 > max_head:
            too_big = HeaderTooLarge(f"The request head is larger than {max_head} bytes")
            await _refuse(stream, error_response(too_big))
            return
        if is_events_upgrade(head):
            try:
                await serve_events(stream, head, svc, _peer(stream), frames)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except Exception:  # the boundary of one connection: log it, keep serving
                log.exception("stream failed remote=%s", _peer(stream))
            finally:
                await trio.aclose_forcefully(stream)
            return
        prefixed: Any = PrefixedStream(stream, head)
        try:
            await HypercornConnection(asgi, hc, context, state, prefixed).run()
        finally:
            await trio.aclose_forcefully(stream)  # whatever ended the connection

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as handlers:
            async with trio.open_nursery() as accept:
                accept.start_soon(
                    partial(trio.serve_listeners, handle, listeners, handler_nursery=handlers)
                )
                task_status.started(urls)
                await shutdown_trigger()
                accept.cancel_scope.cancel()  # stop accepting
            await context.terminated.set()  # idle keep-alive connections close
            handlers.cancel_scope.deadline = trio.current_time() + hc.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
