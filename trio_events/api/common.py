"""Helpers every blueprint uses: the services, the caller, the body, the reply."""

from __future__ import annotations

import json
from typing import Any, cast

from quart import Response, current_app, g, request

from ..errors import BadRequest, PayloadTooLarge
from ..services import Principal, Services
from ..streams import SESSION_COOKIE, bearer_from

__all__ = [
    "SESSION_COOKIE",
    "authenticate",
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


async def raw_body(limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.body:  # stop reading as soon as the limit is passed
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
        chunks.append(chunk)
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
