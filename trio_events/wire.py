"""JSON shapes of the contract, rendered from the domain values.

Users go through a private cattrs converter that renames fields to camelCase.
Messages and rooms are rendered by hand because their shape depends on the
value (``issueProperties`` only for issues) or on the viewer (a room's
``unreadMessageCount``, ``isModerator`` and ``isPinned``).

A room is rendered in two steps so that REST responses and events agree by
construction: :func:`room_template` captures everything about the room that
any viewer could see, and :func:`render_room` picks one viewer's fields out of
it.  Room events store the template in the log and render per recipient.
"""

from __future__ import annotations

from typing import Any

import attrs
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter

from .model import Attachment, Message, RoomState, User

__all__ = [
    "attachment_json",
    "camel",
    "converter",
    "message_json",
    "render_room",
    "room_json",
    "room_template",
    "unstructure",
]

converter = make_converter()

JsonObject = dict[str, Any]


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _register_camel(cls: type) -> None:
    overrides: dict[str, Any] = {f.name: override(rename=camel(f.name)) for f in attrs.fields(cls)}
    converter.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, converter, **overrides))


_register_camel(User)


def unstructure(value: object) -> Any:
    return converter.unstructure(value)


def message_json(message: Message) -> JsonObject:
    data: JsonObject = {
        "messageId": message.message_id,
        "parentMessageId": message.parent_message_id,
        "userId": message.user_id,
        "roomId": message.room_id,
        "text": message.text,
        "createdUtc": message.created_utc,
        "lastModifiedUtc": message.last_modified_utc,
        "lastEditedUtc": message.last_edited_utc,
        "markupType": str(message.markup_type),
        "messageType": str(message.message_type),
        "priority": str(message.priority),
        "commentCount": message.comment_count,
        "attachments": [attachment_json(a) for a in message.attachments],
        "readTimestamps": [
            {"userId": read.user_id, "readUtc": read.read_utc} for read in message.read_timestamps
        ],
    }
    if message.issue_properties is not None:
        issue = message.issue_properties
        data["issueProperties"] = {
            "type": str(issue.type),
            "status": str(issue.status),
            "assignees": list(issue.assignees),
        }
    if message.meeting_properties is not None:
        meeting = message.meeting_properties
        data["meetingProperties"] = {"timeUtc": meeting.time_utc, "duration": meeting.duration}
    return data


def attachment_json(attachment: Attachment) -> JsonObject:
    return {
        "attachmentId": attachment.attachment_id,
        "attachmentState": "ReadyForDownloadFromServerToClient",
        "createdUtc": attachment.created_utc,
        "lastModifiedUtc": attachment.last_modified_utc,
        "fileChecksum": attachment.file_checksum,
        "fileName": attachment.file_name,
        "fileSize": attachment.file_size,
        "hasThumbnail": False,
        "roomId": attachment.room_id,
        "textMessageId": attachment.message_id,
    }


def room_template(state: RoomState, only: set[int] | None = None) -> JsonObject:
    """Everything any viewer (or only the users in ``only``) could see of a room."""
    room = state.room
    last = state.last_message
    return {
        "room": {
            "roomId": room.room_id,
            "displayName": room.display_name,
            "roomType": str(room.room_type),
            "createdUtc": room.created_utc,
            "lastModifiedUtc": room.last_modified_utc,
            "isArchived": room.is_archived,
            "lastMessage": None
            if last is None
            else {
                "messageId": last.message_id,
                "userId": last.user_id,
                "createdUtc": last.created_utc,
            },
            "discussionMessageId": None,
        },
        "messageCount": room.message_count,
        "perUser": {
            str(user_id): [fields.read_count, fields.is_moderator, fields.is_pinned]
            for user_id, fields in sorted(state.per_user.items())
            if only is None or user_id in only
        },
    }


def render_room(template: JsonObject, user_id: int) -> JsonObject:
    """One viewer's room object, as in ``GET /api/v1/rooms``."""
    read_count, is_moderator, is_pinned = template["perUser"].get(str(user_id), (0, False, False))
    return {
        **template["room"],
        "unreadMessageCount": max(template["messageCount"] - read_count, 0),
        "isModerator": is_moderator,
        "isPinned": is_pinned,
    }


def room_json(state: RoomState, user_id: int) -> JsonObject:
    return render_room(room_template(state, {user_id}), user_id)
