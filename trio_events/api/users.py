"""Users and their avatars (API.md section 3)."""

from __future__ import annotations

from quart import Blueprint, Response

from ..errors import Forbidden
from ..model import Avatar
from ..services.images import EXTENSIONS
from ..wire import unstructure
from .common import authenticate, json_body, ok, raw_body, services

__all__ = ["avatar_response", "blueprint"]

blueprint = Blueprint("users", __name__, url_prefix="/api/v1/users")


def avatar_response(avatar: Avatar) -> Response:
    extension = EXTENSIONS.get(avatar.content_type, "bin")
    response = Response(avatar.data, status=200, content_type=avatar.content_type)
    response.headers["Content-Length"] = str(len(avatar.data))
    response.headers["Content-Disposition"] = f'inline; filename="avatar.{extension}"'
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@blueprint.get("")
async def list_users() -> Response:
    await authenticate()
    users = await services().users.list_users()
    return ok(users=[unstructure(user) for user in users])


@blueprint.post("")
async def create_user() -> Response:
    principal = await authenticate()
    if not principal.user.is_admin:
        raise Forbidden("Only administrators can create users")
    user = await services().users.create_user_from_json(principal.user, await json_body())
    return ok(userId=user.user_id, user=unstructure(user))


@blueprint.patch("/<int:user_id>")
async def update_user(user_id: int) -> Response:
    principal = await authenticate()
    change = await services().users.update_user(
        principal.user,
        user_id,
        await json_body(),
        keep_credential=principal.credential.credential_id,
    )
    return ok(user=unstructure(change.user))


@blueprint.get("/<int:user_id>/avatar.jpg")
async def get_avatar(user_id: int) -> Response:
    await authenticate()
    return avatar_response(await services().users.get_avatar(user_id))


@blueprint.put("/<int:user_id>/avatar.jpg")
async def put_avatar(user_id: int) -> Response:
    principal = await authenticate()
    if not principal.user.is_admin and principal.user_id != user_id:
        raise Forbidden("Only administrators can change other users' avatars")
    data = await raw_body(services().config.limits.max_avatar_bytes)
    await services().users.put_avatar(principal.user, user_id, data)
    return ok()
