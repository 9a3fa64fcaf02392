"""Every error the app produces becomes ``{"errorText", "httpStatusCode"}``.

This is one of the two documented places that catch broadly (the other is a
stream connection): an unexpected exception is logged with its traceback here
and answered with a 500 that reveals nothing of it.
"""

from __future__ import annotations

import logging

from quart import Response, has_request_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..errors import ApiError, RateLimited
from .common import json_response

__all__ = ["install_error_handlers"]

log = logging.getLogger("trio_events.http")

_HTTP_TEXTS = {
    400: "Bad request",
    404: "No such endpoint",
    405: "Method not allowed",
    408: "The request body took too long to arrive",
    413: "The request body is too large",
}


def install_error_handlers(app: QuartTrio) -> None:
    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        response = json_response({"errorText": exc.text}, exc.status)
        if exc.status in (408, 413):
            # The body was refused unread: the connection cannot carry another request.
            response.headers["Connection"] = "close"
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        text = _HTTP_TEXTS.get(status, exc.name)
        response = json_response({"errorText": text}, status)
        if status in (408, 413):
            response.headers["Connection"] = "close"
        if status == 405 and exc.get_headers():
            for name, value in exc.get_headers():
                if name.lower() == "allow":
                    response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        if has_request_context():
            where = f"method={request.method} path={request.path}"
        else:
            where = f"websocket path={websocket.path}"
        log.error("unhandled error %s", where, exc_info=exc)
        return json_response({"errorText": "Internal server error"}, 500)
