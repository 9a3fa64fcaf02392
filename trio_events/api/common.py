"""Helpers every blueprint uses: the services, the caller, the body, the reply."""

from __future__ import annotations

import json
from typing import Any, cast

import trio
from quart import Response, current_app, g, request

from ..errors import BadRequest, PayloadTooLarge, RequestTimeout
from ..services import Principal, Services
from ..streams import SESSION_COOKIE, bearer_from
from .body_window import consumed

__all__ = [
    "SESSION_COOKIE",
    "authenticate",
    "discard_body",
    "bearer_from",
    "json_body",
    "json_response",
    "ok",
    "raw_body",
    "services",
]

EXTENSION_KEY = "trio_events"


def services() -> Services:
    return cast(Services, current_app.extensions[EXTENSION_KEY])


async def authenticate() -> Principal:
    """The caller, from the bearer header or the session cookie; 401 otherwise."""
    principal = await services().auth.authenticate(
        bearer_from(request.headers.get("Authorization")), request.cookies.get(SESSION_COOKIE)
    )
    g.user_id = principal.user_id
    return principal


DISCARD_BYTES = 8 << 20  # read and drop at most this much of a refused body
DISCARD_SECONDS = 2.0


async def discard_body() -> None:
    """Read and drop (a bounded part of) a body we refused.

    A server that answers early and closes while the client is still sending
    makes the kernel reset the connection, and the client may never see the
    answer.  Draining a little first lets the 413 arrive.
    """
    seen = 0
    with trio.move_on_after(DISCARD_SECONDS):
        try:
            async for chunk in request.body:
                consumed(len(chunk))
                seen += len(chunk)
                if seen > DISCARD_BYTES:
                    return
        except Exception:  # Quart's own limit or a broken body: nothing left to drain
            return


async def raw_body(limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes."""
    too_large = PayloadTooLarge(f"The request body is larger than {limit} bytes")
    length = request.content_length
    if length is not None and length > limit:
        await discard_body()
        raise too_large
    chunks: list[bytes] = []
    size = 0
    timeout = services().config.server.request_timeout
    with trio.move_on_after(timeout) as scope:
        async for chunk in request.body:  # stop keeping it as soon as the limit is passed
            consumed(len(chunk))  # held in ``chunks``, which the limit bounds
            size += len(chunk)
            if size > limit:
                await discard_body()
                raise too_large
            chunks.append(chunk)
    if scope.cancelled_caught:
        raise RequestTimeout(f"The request body did not arrive within {timeout:g} seconds")
    return b"".join(chunks)


async def json_body(*, allow_empty: bool = False) -> dict[str, Any]:
    """The request's JSON object; 400 when it is malformed or not an object."""
    data = await raw_body(services().config.limits.max_request_bytes)
    if not data.strip():
        if allow_empty:
            return {}
        raise BadRequest("A JSON request body is required")
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"Malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


def json_response(payload: dict[str, Any], status: int = 200) -> Response:
    body = {**payload, "httpStatusCode": status}
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        content_type="application/json; charset=utf-8",
    )


def ok(**payload: Any) -> Response:
    return json_response(payload)
