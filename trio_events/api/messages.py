"""Messages, comments and read receipts (API.md section 5)."""

from __future__ import annotations

from quart import Blueprint, Response, request

from ..wire import message_json
from .common import authenticate, json_body, ok, services

__all__ = ["blueprint"]

blueprint = Blueprint("messages", __name__, url_prefix="/api/v1")


def _query() -> dict[str, list[str]]:
    """Every query parameter with all of its values (a repeated one is an error)."""
    return request.args.to_dict(flat=False)


@blueprint.get("/rooms/<int:room_id>/messages")
async def history(room_id: int) -> Response:
    principal = await authenticate()
    page = await services().messages.history(principal.user, room_id, _query())
    return ok(roomId=page.room_id, messages=[message_json(m) for m in page.messages])


@blueprint.post("/rooms/<int:room_id>/messages")
async def post_messages(room_id: int) -> Response:
    principal = await authenticate()
    body = await json_body()
    ids = await services().messages.post(principal.user, room_id, body)
    if "messages" in body:
        return ok(messageIds=ids)
    return ok(messageId=ids[0])


@blueprint.get("/messages/<int:message_id>/comments")
async def comments(message_id: int) -> Response:
    principal = await authenticate()
    parent, page = await services().messages.comments(principal.user, message_id, _query())
    return ok(
        roomId=parent.room_id,
        parentMessageId=parent.message_id,
        messages=[message_json(m) for m in page],
    )


@blueprint.post("/messages/<int:message_id>/comments")
async def post_comment(message_id: int) -> Response:
    principal = await authenticate()
    comment_id = await services().messages.comment(principal.user, message_id, await json_body())
    return ok(messageId=comment_id)


@blueprint.patch("/messages/<int:message_id>")
async def edit(message_id: int) -> Response:
    principal = await authenticate()
    message = await services().messages.edit(principal.user, message_id, await json_body())
    return ok(message=message_json(message))


@blueprint.delete("/messages/<int:message_id>")
async def delete(message_id: int) -> Response:
    principal = await authenticate()
    await services().messages.delete(principal.user, message_id)
    return ok()


@blueprint.post("/messages/<int:message_id>/read")
async def mark_read(message_id: int) -> Response:
    principal = await authenticate()
    await json_body(allow_empty=True)
    await services().messages.mark_read(principal.user, message_id)
    return ok()
