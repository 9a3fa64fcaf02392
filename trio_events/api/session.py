"""Login, logout, status and Web API tokens (API.md section 2)."""

from __future__ import annotations

from quart import Blueprint, Response, request

from ..errors import Unauthorized
from ..services import validate as v
from .common import SESSION_COOKIE, authenticate, json_body, ok, services

__all__ = ["blueprint"]

blueprint = Blueprint("session", __name__, url_prefix="/api/v1")


def _set_session_cookie(response: Response, value: str, max_age: int) -> None:
    config = services().config
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=config.auth.cookie_secure or config.server.tls,
    )


@blueprint.post("/login")
async def login() -> Response:
    body = await json_body()
    user_name = body.get("userName")
    password = body.get("password")
    if not isinstance(user_name, str) or not isinstance(password, str):
        raise Unauthorized("The username or password is invalid.")
    if len(user_name) > 256 or len(password) > v.MAX_PASSWORD:
        raise Unauthorized("The username or password is invalid.")
    address = request.remote_addr or "unknown"
    user, secret = await services().auth.login(user_name, password, address)
    response = ok(userId=user.user_id, userSessionId=secret)
    _set_session_cookie(response, secret, int(services().config.auth.session_ttl))
    return response


@blueprint.post("/logout")
async def logout() -> Response:
    await services().auth.logout(request.cookies.get(SESSION_COOKIE))
    response = ok()
    _set_session_cookie(response, "", 0)
    return response


@blueprint.get("/status")
async def status() -> Response:
    principal = await authenticate()
    return ok(userId=principal.user_id, userSessionId=principal.secret)


@blueprint.post("/token")
async def token() -> Response:
    principal = await authenticate()
    secret = await services().auth.issue_token(principal.user_id)
    return ok(token=secret)
