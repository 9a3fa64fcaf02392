"""``GET /api/v1/events`` through quart-trio: the fallback events transport.

The server's own listener (:mod:`trio_events.transport`) serves event
streams itself when the upgrade is the first request on a connection, which
is how browsers and WebSocket libraries open them.  An upgrade that arrives
on a connection already used for other requests reaches this route instead.
It refuses and greets exactly like the main transport (:mod:`trio_events.streams`),
but ASGI has no message for WebSocket pings, so here hypercorn sends the pings
and a missing pong goes unnoticed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import trio
from quart import Blueprint, Response, request, websocket
from quart.wrappers import Websocket

from ..connection import PeerClosed, run_stream
from ..errors import BadRequest
from ..replay import checked_since, plan_replay, resync_frame
from ..services.validate import page_limit, query_value
from ..streams import open_stream
from .common import authenticate, services

__all__ = ["QuartTransport", "blueprint"]

blueprint = Blueprint("events", __name__)
log = logging.getLogger("trio_events.stream")


class QuartTransport:
    """:class:`~trio_events.connection.Transport` over a Quart websocket."""

    supports_ping = False
    awaiting_pong = False
    control_frames = 0  # hypercorn answers pings on this route: none reach us

    def __init__(self, ws: Websocket) -> None:
        self._ws = ws
        self._lock = trio.Lock()  # the sender and the reader's pongs

    async def send(self, frame: str) -> None:
        async with self._lock:
            await self._ws.send(frame)

    async def send_many(self, frames: Sequence[str]) -> None:
        async with self._lock:
            for frame in frames:
                await self._ws.send(frame)

    async def receive(self, deadline: float = math.inf) -> str | bytes | None:
        # quart-trio cancels the handler when the client disconnects, so this
        # never returns for a closed connection.  (No pings here: the deadline
        # is always infinite.)
        with trio.move_on_at(deadline):
            return await self._ws.receive()
        return None

    async def send_ping(self) -> None:  # pragma: no cover - supports_ping is False
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> None:
        try:
            await self._ws.close(code, reason)
        except Exception as exc:  # the peer went away while we closed
            raise PeerClosed from exc


@blueprint.get("/api/v1/events")
async def catch_up() -> Response:
    """Catch-up over plain HTTP: the same events a resumed stream would replay.

    ``eventId`` in the answer is where to continue from (``since`` of the next
    call); it is below the newest id when ``limit`` cut the page short.
    Query parameters other than ``since`` and ``limit`` are ignored, as on
    the stream (:func:`~trio_events.services.validate.query_value`).
    """
    principal = await authenticate()
    svc = services()
    broker = svc.broker
    args = request.args
    cap = svc.config.limits.max_page
    limit = page_limit(query_value(args.getlist("limit"), "limit"), cap)
    since = await checked_since(svc, args.getlist("since"))
    until = broker.last_event_id
    acl = broker.acl_copy()  # the table at `until`, taken in the same step
    if since is None:
        frames, next_since = [], until
    else:
        replay = await plan_replay(svc.store, acl, principal.user_id, since, until, limit)
        if replay.resync_oldest is not None:
            frames, next_since = [resync_frame(replay.resync_oldest)], until
        else:
            frames, next_since = replay.frames, replay.next_since
    body = f'{{"events":[{",".join(frames)}],"eventId":{next_since},"httpStatusCode":200}}'
    return Response(body, status=200, content_type="application/json; charset=utf-8")


@blueprint.websocket("/api/v1/events")
async def events() -> None:
    """The stream on a connection that already carried another request (the
    fast transport takes every upgrade that opens a connection)."""
    svc = services()
    headers = {name.lower(): value for name, value in websocket.headers.items()}
    if "sec-websocket-extensions" in headers:
        # hypercorn would accept permessage-deflate, and inflates a client
        # frame whole before its size limit applies: a few KiB can become
        # megabytes.  Browsers open WebSockets on new connections, where no
        # extension is ever negotiated; here an offer is refused.
        raise BadRequest(
            "WebSocket extensions are not accepted on a reused connection;"
            " open the event stream on a new connection"
        )
    since = websocket.args.getlist("since")
    async with open_stream(svc, headers, websocket.cookies, since) as start:
        await websocket.accept()
        user_id = start.principal.user_id
        log.info("stream opened user=%s transport=asgi replayed=%d", user_id, len(start.replay))
        verdict = await run_stream(
            QuartTransport(websocket),
            start.subscriber,
            start.hello,
            svc.config.events,
            replay=start.replay,
        )
        svc.metrics.stream_closed(verdict.code, verdict.reason)
        log.info("stream closed user=%s code=%s", user_id, verdict.code or "client")
