"""Liveness, readiness and the authenticated server-health report."""

from __future__ import annotations

import ipaddress

import trio
from quart import Blueprint, Response, request

from .. import __version__
from ..errors import Forbidden
from .common import authenticate, json_response, ok, services

__all__ = ["blueprint"]

blueprint = Blueprint("health", __name__)
READY_TIMEOUT = 2.0


@blueprint.get("/healthz")
async def healthz() -> Response:
    return ok(status="ok")


@blueprint.get("/readyz")
async def readyz() -> Response:
    with trio.move_on_after(READY_TIMEOUT):
        try:
            await services().store.ping()
        except Exception as exc:  # readiness reports the failure instead of raising it
            return json_response({"errorText": f"storage unavailable: {type(exc).__name__}"}, 503)
        bus = services().bus
        if bus is None:
            return ok(status="ready", storage="ok")
        if bus.connected:
            return ok(status="ready", storage="ok", bus="ok")
        # Still serving every event (read from the log), only later: stay in
        # rotation, and say so.
        return ok(status="degraded", storage="ok", bus="unavailable")
    return json_response({"errorText": "storage did not answer in time"}, 503)


@blueprint.get("/metrics")
async def metrics() -> Response:
    """Prometheus exposition: from loopback freely, from elsewhere for admins
    (e.g. a scraper with an admin's bearer token)."""
    if not _is_loopback(request.remote_addr):
        principal = await authenticate()
        if not principal.user.is_admin:
            raise Forbidden("Metrics are for administrators")
    body, content_type = services().metrics.exposition(request.headers.get("Accept", ""))
    return Response(body, status=200, content_type=content_type)


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@blueprint.get("/api/v1/server-health")
async def server_health() -> Response:
    await authenticate()
    svc = services()
    return ok(
        status="ok",
        version=__version__,
        uptimeSeconds=round(trio.current_time() - svc.started_at, 3),
        openStreams=svc.broker.statistics().subscribers,
    )
