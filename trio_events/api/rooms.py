"""Rooms, members, pins, room avatars and permissions (API.md sections 4 and 7)."""

from __future__ import annotations

from quart import Blueprint, Response

from .common import authenticate, json_body, ok, raw_body, services
from .users import avatar_response

__all__ = ["blueprint"]

blueprint = Blueprint("rooms", __name__, url_prefix="/api/v1")


@blueprint.get("/rooms")
async def list_rooms() -> Response:
    principal = await authenticate()
    return ok(rooms=await services().rooms.list_rooms(principal.user))


@blueprint.post("/rooms")
async def create_room() -> Response:
    principal = await authenticate()
    room = await services().rooms.create(principal.user, await json_body())
    return ok(roomId=room["roomId"], room=room)


@blueprint.get("/rooms/<int:room_id>")
async def get_room(room_id: int) -> Response:
    principal = await authenticate()
    return ok(room=await services().rooms.get_room(principal.user, room_id))


@blueprint.patch("/rooms/<int:room_id>")
async def update_room(room_id: int) -> Response:
    principal = await authenticate()
    room = await services().rooms.update(principal.user, room_id, await json_body())
    return ok(room=room)


@blueprint.delete("/rooms/<int:room_id>")
async def delete_room(room_id: int) -> Response:
    principal = await authenticate()
    await services().rooms.delete(principal.user, room_id)
    return ok()


@blueprint.get("/rooms/<int:room_id>/members")
async def list_members(room_id: int) -> Response:
    principal = await authenticate()
    members = await services().rooms.members(principal.user, room_id)
    return ok(roomId=room_id, members=members)


@blueprint.put("/rooms/<int:room_id>/members/<int:user_id>")
async def put_member(room_id: int, user_id: int) -> Response:
    principal = await authenticate()
    body = await json_body(allow_empty=True)
    await services().rooms.put_member(principal.user, room_id, user_id, body)
    return ok()


@blueprint.delete("/rooms/<int:room_id>/members/<int:user_id>")
async def remove_member(room_id: int, user_id: int) -> Response:
    principal = await authenticate()
    await services().rooms.remove_member(principal.user, room_id, user_id)
    return ok()


@blueprint.put("/rooms/<int:room_id>/pin")
async def pin(room_id: int) -> Response:
    principal = await authenticate()
    await services().rooms.set_pin(principal.user, room_id, True)
    return ok()


@blueprint.delete("/rooms/<int:room_id>/pin")
async def unpin(room_id: int) -> Response:
    principal = await authenticate()
    await services().rooms.set_pin(principal.user, room_id, False)
    return ok()


@blueprint.get("/rooms/<int:room_id>/avatar.jpg")
async def get_avatar(room_id: int) -> Response:
    principal = await authenticate()
    return avatar_response(await services().rooms.get_avatar(principal.user, room_id))


@blueprint.put("/rooms/<int:room_id>/avatar.jpg")
async def put_avatar(room_id: int) -> Response:
    principal = await authenticate()
    await services().rooms.access(principal.user, room_id)  # 404 before reading the body
    data = await raw_body(services().config.limits.max_avatar_bytes)
    await services().rooms.put_avatar(principal.user, room_id, data)
    return ok()


@blueprint.get("/room-permissions/<int:room_id>")
async def room_permissions(room_id: int) -> Response:
    principal = await authenticate()
    flags = await services().rooms.permissions(principal.user, room_id)
    return ok(roomPermissions={"roomId": room_id, "permissions": flags})
