"""``GET /api/v1/events``: the WebSocket stream over quart-trio.

The handshake is checked before the upgrade is accepted, so a refusal is a
plain HTTP response in the contract's error format: 401 without valid
credentials, 403 for a cookie-authenticated request from a foreign
``Origin`` (cross-site WebSocket hijacking), 429 past the per-user stream cap.
Then the stream runs in :func:`trio_events.connection.run_stream`.

This transport cannot send WebSocket pings (ASGI has no message for them):
hypercorn sends them every ``heartbeat_interval`` (browsers answer), but a
missing pong is not detected here.  A transport that owns the socket does.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from quart import Blueprint, websocket
from quart.wrappers import Websocket

from ..broker import CloseCode
from ..connection import PeerClosed, run_stream
from ..errors import Forbidden, RateLimited
from ..services import Principal
from .common import SESSION_COOKIE, bearer_from, services

__all__ = ["QuartTransport", "blueprint", "origin_allowed"]

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


def origin_allowed(origin: str | None, host: str | None, tls: bool, allowed: list[str]) -> bool:
    """Whether a cookie-authenticated stream from ``origin`` may open."""
    if origin is None:
        return True  # not a browser: browsers always send Origin on a WebSocket
    normalized = origin.rstrip("/").lower()
    if normalized in {a.rstrip("/").lower() for a in allowed}:
        return True
    if host is None:
        return False
    parts = urlsplit(normalized)
    own_scheme = "https" if tls else "http"
    return parts.scheme == own_scheme and parts.netloc == host.lower()


async def _authenticate() -> Principal:
    svc = services()
    bearer = bearer_from(websocket.headers.get("Authorization"))
    cookie = websocket.cookies.get(SESSION_COOKIE)
    principal = await svc.auth.authenticate(bearer, cookie)
    if bearer is None and not origin_allowed(
        websocket.headers.get("Origin"),
        websocket.headers.get("Host"),
        svc.config.server.tls,
        svc.config.server.allowed_origins,
    ):
        raise Forbidden("Cross-origin event streams need an allowed Origin")
    return principal


@blueprint.websocket("/api/v1/events")
async def events() -> None:
    svc = services()
    principal = await _authenticate()
    broker = svc.broker
    if broker.count_streams(principal.user_id) >= svc.config.events.max_streams_per_user:
        raise RateLimited("Too many open event streams for this user", retry_after=5)
    with broker.subscribe(principal.user_id, principal.credential.credential_id) as subscriber:
        await websocket.accept()
        hello = json.dumps(
            {
                "type": "Hello",
                "data": {
                    "userId": principal.user_id,
                    "heartbeatInterval": svc.config.events.heartbeat_interval,
                    "eventId": subscriber.hello_event_id,
                },
            },
            separators=(",", ":"),
        )
        log.info("stream opened user=%s remote=%s", principal.user_id, websocket.remote_addr)
        code: int | None = CloseCode.NORMAL
        try:
            verdict = await run_stream(
                QuartTransport(websocket), subscriber, hello, svc.config.events
            )
            code = verdict.code
        finally:
            log.info(
                "stream closed user=%s code=%s queued=%d",
                principal.user_id,
                code if code is not None else "client",
                subscriber.queued,
            )
