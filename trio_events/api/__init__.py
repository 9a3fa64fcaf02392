"""The Quart application: blueprints, error handlers and the access log."""

from __future__ import annotations

import logging
import time

from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.routing import IntegerConverter, Map

from ..errors import HeaderTooLarge
from ..services import Services
from ..services.validate import MAX_ID
from . import attachments, docs, events, health, messages, rooms, session, users, web
from .body_window import limit_unread_body
from .common import EXTENSION_KEY
from .errors import install_error_handlers

__all__ = ["create_app"]

access_log = logging.getLogger("trio_events.http")


def _up_to(bound: int) -> str:
    """A regular expression for the decimal numbers 1 to ``bound``, with no
    leading zero: those with fewer digits, then digit by digit below it."""
    digits = str(bound)
    width = len(digits)
    choices = [f"[1-9][0-9]{{0,{width - 2}}}"] if width > 1 else []
    for place, digit in enumerate(digits):
        lowest = 1 if place == 0 else 0
        if int(digit) > lowest:
            rest = width - place - 1
            choices.append(f"{digits[:place]}[{lowest}-{int(digit) - 1}][0-9]{{{rest}}}")
    choices.append(digits)
    return "(?:" + "|".join(choices) + ")"


class IdConverter(IntegerConverter):
    """``<int:...>`` in every route: an id as the contract has it, 1 to
    ``MAX_ID`` in ASCII digits.  The bound is in the pattern, so any other
    number matches no route (404, as an id that does not exist; werkzeug
    would answer 405 if a rule matched and only its converter refused) and
    the store never sees it."""

    regex = _up_to(MAX_ID)

    def __init__(self, url_map: Map) -> None:
        super().__init__(url_map, min=1, max=MAX_ID)


def create_app(svc: Services) -> QuartTrio:
    """Build the app around ``svc``; the caller owns the services' lifetimes."""
    app = QuartTrio("trio_events", static_folder=None)
    app.asgi_app = limit_unread_body(app.asgi_app, svc.config.limits)  # type: ignore[method-assign,assignment]
    limits = svc.config.limits
    # Quart refuses a declared Content-Length above this at once; every route
    # then enforces its own, smaller limit while the body streams in
    # (api.common.raw_body, api.attachments), so nothing buffers past it.
    app.config["MAX_CONTENT_LENGTH"] = max(
        limits.max_request_bytes, limits.max_avatar_bytes, limits.max_upload_bytes
    )
    app.config["BODY_TIMEOUT"] = svc.config.server.request_timeout
    app.config["RESPONSE_TIMEOUT"] = svc.config.server.request_timeout
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.extensions[EXTENSION_KEY] = svc
    app.url_map.converters["int"] = IdConverter  # before any rule uses it
    for blueprint in (
        session.blueprint,
        users.blueprint,
        rooms.blueprint,
        messages.blueprint,
        attachments.blueprint,
        health.blueprint,
        events.blueprint,
        docs.blueprint,
        web.blueprint,
    ):
        app.register_blueprint(blueprint)
    install_error_handlers(app)

    @app.before_request
    async def start_timer() -> None:
        g.started = time.perf_counter()
        # The first request head of a connection is bounded by the transport;
        # later ones reach h11, which only bounds heads that arrive in pieces.
        limit = svc.config.server.max_header_bytes
        head = (
            len(request.method)
            + len(request.full_path)
            + sum(len(name) + len(value) + 4 for name, value in request.headers.items())
        )
        if head > limit:
            raise HeaderTooLarge(f"The request head is larger than {limit} bytes")

    @app.after_request
    async def log_request(response: Response) -> Response:
        started = g.get("started")
        elapsed = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        response.headers.setdefault("Cache-Control", "no-store")
        rule = request.url_rule.rule if request.url_rule is not None else None
        svc.metrics.request_done(rule, request.method, response.status_code, elapsed / 1000)
        access_log.info(
            "request method=%s path=%s status=%d ms=%.1f user=%s remote=%s",
            request.method,
            request.path,
            response.status_code,
            elapsed,
            g.get("user_id", "-"),
            request.remote_addr or "-",
        )
        return response

    return app
