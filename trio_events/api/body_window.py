"""Back-pressure for request bodies, and a clean end for bodies left unread.

quart-trio runs a receiver task per request that appends every ASGI
``http.request`` message to ``request.body``, a bytearray with no bound, as
fast as hypercorn delivers them.  A handler that streams a body to slower
storage falls behind, and the rest of the body piles up in memory (most of
a 50 MiB upload, measured).  :func:`limit_unread_body` wraps the ASGI app so
that, for HTTP requests, ``receive`` waits while more than a window of
received bytes has not been consumed; every reader of ``request.body``
reports what it has consumed with :func:`consumed`.  While ``receive``
waits, hypercorn's app queue (a bounded channel) fills, hypercorn stops
reading the socket, and TCP pushes back on the client.  The window is never
smaller than the body limit of the routes that read a whole body (JSON,
avatars), so such a route never waits on it even if a reader forgot to
report.

Once the app starts its answer it reads no more body, so ``receive`` stops
waiting and drops whatever body still arrives (the transport's
``BodyBeforeAnswer`` holds such an early answer a moment for the rest of the
body, and says ``Connection: close`` when it does not come: a connection
whose body was not read to its end cannot carry another request).  This
matters at the end of the exchange: hypercorn then puts ``http.disconnect`` into the
same bounded queue, which a receiver held back by the window would never
empty.  And ``http.disconnect`` reaches the app only after the send in
progress has finished: that send is hypercorn closing the connection, and
quart-trio cancels the sending task as soon as its receiver sees the
disconnect, which would leave the socket open and a keep-alive client
waiting on it forever.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

import attrs
import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from quart import request

from ..config import LimitsConfig

__all__ = ["BodyWindow", "consumed", "limit_unread_body", "window_size"]

MIN_WINDOW = 1 << 20
SCOPE_KEY = "trio_events.body_window"

AsgiApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Coroutine[Any, Any, None]]


def window_size(limits: LimitsConfig) -> int:
    """At least 1 MiB, and never below a whole-body route's limit."""
    return max(MIN_WINDOW, limits.max_request_bytes, limits.max_avatar_bytes)


@attrs.define
class BodyWindow:
    """One request body between hypercorn and the app: bytes handed over but
    not consumed, and whether the app has answered."""

    size: int
    unread: int = 0
    answered: bool = False
    sending: int = 0
    _room: trio.Event = attrs.field(factory=trio.Event)
    _sent: trio.Event = attrs.field(factory=trio.Event)

    def received(self, message: ASGIReceiveEvent) -> None:
        if message["type"] == "http.request":
            self.unread += len(message.get("body", b""))

    def consumed(self, nbytes: int) -> None:
        self.unread = max(0, self.unread - nbytes)
        if self.unread <= self.size:
            self._room.set()

    def answer(self) -> None:
        self.answered = True
        self._room.set()

    async def wait_for_room(self) -> None:
        """Return once at most ``size`` bytes are unread, or the app answered.

        Unbounded on purpose: the handler's own reads are bounded by
        ``request_timeout``, and quart-trio cancels this wait when the
        handler has answered.
        """
        while self.unread > self.size and not self.answered:
            self._room = trio.Event()
            await self._room.wait()

    async def wait_until_sent(self) -> None:
        while self.sending:
            self._sent = trio.Event()
            await self._sent.wait()

    async def send(self, send: ASGISendCallable, message: ASGISendEvent) -> None:
        self.sending += 1
        try:
            await send(message)
        finally:
            self.sending -= 1
            if not self.sending:
                self._sent.set()


def limit_unread_body(app: AsgiApp, limits: LimitsConfig) -> AsgiApp:
    """``app`` with its HTTP ``receive`` held back by a :class:`BodyWindow`."""
    window = window_size(limits)

    async def asgi_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        body = BodyWindow(window)
        cast(dict[str, Any], scope)[SCOPE_KEY] = body

        async def receive_within_window() -> ASGIReceiveEvent:
            while True:
                await body.wait_for_room()
                message = await receive()
                body.received(message)
                if message["type"] == "http.disconnect":
                    await body.wait_until_sent()
                if not (body.answered and message.get("more_body", False)):
                    return message

        async def send_answer(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                body.answer()
            await body.send(send, message)

        await app(scope, receive_within_window, send_answer)

    return asgi_app


def consumed(nbytes: int) -> None:
    """Report that the current request's handler is done with ``nbytes`` of its body."""
    body = request.scope.get(SCOPE_KEY)
    if isinstance(body, BodyWindow):
        body.consumed(nbytes)
