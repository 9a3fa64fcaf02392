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

from quart import Blueprint, websocket
from quart.wrappers import Websocket

from ..connection import PeerClosed, run_stream
from ..streams import open_stream
from .common import services

__all__ = ["QuartTransport", "blueprint"]

blueprint = Blueprint("events", __name__)
log = logging.getLogger("trio_events.stream")


class QuartTransport:
    """:class:`~trio_events.connection.Transport` over a Quart websocket."""

    supports_ping = False

    def __init__(self, ws: Websocket) -> None:
        self._ws = ws

    async def send(self, frame: str) -> None:
        await self._ws.send(frame)

    async def receive(self) -> str | bytes:
        # quart-trio cancels the handler when the client disconnects, so this
        # never returns for a closed connection.
        return await self._ws.receive()

    async def ping(self) -> None:  # pragma: no cover - supports_ping is False
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> None:
        try:
            await self._ws.close(code, reason)
        except Exception as exc:  # the peer went away while we closed
            raise PeerClosed from exc


@blueprint.websocket("/api/v1/events")
async def events() -> None:
    svc = services()
    headers = {name.lower(): value for name, value in websocket.headers.items()}
    since = websocket.args.get("since")
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
        log.info("stream closed user=%s code=%s", user_id, verdict.code or "client")
