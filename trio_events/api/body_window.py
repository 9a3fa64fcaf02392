"""Request bodies between hypercorn and the app: back-pressure, and early answers.

One ASGI wrapper (:func:`limit_unread_body`) keeps one :class:`RequestBody`
per HTTP request and does three things with it.

**Back-pressure.**  quart-trio runs a receiver task per request that appends
every ASGI ``http.request`` message to ``request.body``, a bytearray with no
bound, as fast as hypercorn delivers them.  A handler that streams a body to
slower storage falls behind, and the rest of the body piles up in memory
(most of a 50 MiB upload, measured).  So ``receive`` waits while more than a
window of received bytes has not been consumed; every reader of
``request.body`` reports what it has consumed with :func:`consumed`.  While
``receive`` waits, hypercorn's app queue (a bounded channel) fills, hypercorn
stops reading the socket, and TCP pushes back on the client.  The window is
never smaller than the body limit of the routes that read a whole body
(JSON, avatars), so such a route never waits on it even if a reader forgot
to report.

**Early answers.**  Once the app starts its answer it reads no more body:
``receive`` stops waiting and drops whatever body still arrives.  An answer
that starts before its body has all arrived (a 401, 404 or 405 to a POST)
is held until it has, for at most ``BODY_WAIT`` seconds and
``BODY_WAIT_BYTES`` more bytes, so that h11 can start the connection's next
request; past that it goes out with ``Connection: close`` (a connection
whose body was not read to its end cannot carry another request).

**The end of the exchange.**  ``http.disconnect`` reaches the app only after
the send in progress has finished: that send may be hypercorn closing the
connection, and quart-trio cancels the sending task as soon as its receiver
sees the disconnect, which would leave the socket open and a keep-alive
client waiting on it forever.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, cast

import attrs
import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    HTTPResponseStartEvent,
    Scope,
)
from quart import request

from ..config import LimitsConfig

__all__ = [
    "BODY_WAIT",
    "BODY_WAIT_BYTES",
    "RequestBody",
    "consumed",
    "limit_unread_body",
    "window_size",
]

MIN_WINDOW = 1 << 20
SCOPE_KEY = "trio_events.body_window"

BODY_WAIT = 1.0
"""Seconds an answer given before its request's body arrived waits for that body.

A body sent right after its head (the usual case) arrives within a round
trip; waiting keeps the connection reusable.  A client that takes longer,
or sends more than ``BODY_WAIT_BYTES`` meanwhile, gets the answer with
``Connection: close``."""

BODY_WAIT_BYTES = 1 << 20
"""Body bytes an early answer waits for at most (read and dropped meanwhile)."""

AsgiApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Coroutine[Any, Any, None]]


def window_size(limits: LimitsConfig) -> int:
    """At least 1 MiB, and never below a whole-body route's limit."""
    return max(MIN_WINDOW, limits.max_request_bytes, limits.max_avatar_bytes)


@attrs.define
class RequestBody:
    """One request body: bytes received and not yet consumed, whether it has
    all arrived, and whether the app has answered."""

    size: int  # the window
    received: int = 0
    unread: int = 0
    complete: bool = False
    answered: bool = False
    sending: int = 0
    hold_limit: float = math.inf  # received bytes an early answer waits for
    _room: trio.Event = attrs.field(factory=trio.Event)
    _sent: trio.Event = attrs.field(factory=trio.Event)
    _settled: trio.Event = attrs.field(factory=trio.Event)

    def saw(self, message: ASGIReceiveEvent) -> None:
        if message["type"] == "http.request":
            nbytes = len(message.get("body", b""))
            self.received += nbytes
            self.unread += nbytes
            self.complete = not message.get("more_body", False)
        else:  # http.disconnect: nothing more will come
            self.complete = True
        if self.complete or self.received > self.hold_limit:
            self._settled.set()

    def consumed(self, nbytes: int) -> None:
        self.unread = max(0, self.unread - nbytes)
        if self.unread <= self.size:
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

    async def answer(self, start: HTTPResponseStartEvent) -> HTTPResponseStartEvent:
        """``start``, once the body has arrived, or with ``Connection: close``
        if it does not within ``BODY_WAIT`` / ``BODY_WAIT_BYTES``."""
        self.answered = True
        self._room.set()  # receive stops waiting: the rest of the body is dropped
        headers = list(start.get("headers", ()))
        closing = any(k.lower() == b"connection" and b"close" in v.lower() for k, v in headers)
        if self.complete or closing:
            return start
        self.hold_limit = self.received + BODY_WAIT_BYTES
        with trio.move_on_after(BODY_WAIT):
            await self._settled.wait()
        if self.complete:
            return start
        return {**start, "headers": [*headers, (b"connection", b"close")]}

    async def wait_until_sent(self) -> None:
        """Bounded by the send in progress: an answer held at most ``BODY_WAIT``,
        then hypercorn's write, under quart's ``RESPONSE_TIMEOUT``."""
        while self.sending:
            self._sent = trio.Event()
            await self._sent.wait()

    async def send(self, send: ASGISendCallable, message: ASGISendEvent) -> None:
        self.sending += 1
        try:
            if message["type"] == "http.response.start":
                message = await self.answer(message)
            await send(message)
        finally:
            self.sending -= 1
            if not self.sending:
                self._sent.set()


def limit_unread_body(app: AsgiApp, limits: LimitsConfig) -> AsgiApp:
    """``app`` with each HTTP request's body managed by a :class:`RequestBody`."""
    window = window_size(limits)

    async def asgi_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        body = RequestBody(window)
        cast(dict[str, Any], scope)[SCOPE_KEY] = body

        async def receive_within_window() -> ASGIReceiveEvent:
            while True:
                await body.wait_for_room()
                message = await receive()
                body.saw(message)
                if message["type"] == "http.disconnect":
                    await body.wait_until_sent()
                if not (body.answered and message.get("more_body", False)):
                    return message

        await app(scope, receive_within_window, partial(body.send, send))

    return asgi_app


def consumed(nbytes: int) -> None:
    """Report that the current request's handler is done with ``nbytes`` of its body."""
    body = request.scope.get(SCOPE_KEY)
    if isinstance(body, RequestBody):
        body.consumed(nbytes)
