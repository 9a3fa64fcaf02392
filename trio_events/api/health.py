"""Liveness, readiness and the authenticated server-health report."""

from __future__ import annotations

import trio
from quart import Blueprint, Response

from .. import __version__
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
        return ok(status="ready", storage="ok")
    return json_response({"errorText": "storage did not answer in time"}, 503)


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
