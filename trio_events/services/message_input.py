"""Validate message bodies from clients into :class:`NewMessage` values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import BadRequest, PayloadTooLarge
from ..model import (
    IssueProperties,
    IssueStatus,
    IssueType,
    MarkupType,
    MeetingProperties,
    MessageType,
    NewMessage,
    Priority,
)
from . import validate as v

__all__ = ["MAX_BATCH", "MessagePatch", "parse_new_message", "parse_patch"]

MAX_BATCH = 100
MAX_ASSIGNEES = 100
_NEW_FIELDS = {
    "content",
    "markupType",
    "messageType",
    "priority",
    "issueProperties",
    "meetingProperties",
}
_PATCH_FIELDS = {"content", "markupType", "priority", "issueProperties", "meetingProperties"}


def check_content(body: Mapping[str, Any], max_bytes: int) -> str:
    text = v.required_str(body, "content")
    if not text.strip():
        raise BadRequest("Field 'content' must not be empty")
    if "\x00" in text:
        raise BadRequest("Field 'content' must not contain NUL characters")
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise PayloadTooLarge(f"Field 'content' is longer than {max_bytes} bytes")
    return text


def _int(body: Mapping[str, Any], name: str, where: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise BadRequest(f"Field '{where}.{name}' must be a non-negative integer")
    return value


def parse_issue(value: object, base: IssueProperties | None = None) -> IssueProperties:
    body = v.require_object(value, "issueProperties")
    v.reject_unknown(body, {"type", "status", "assignees"}, "issueProperties")
    base = base or IssueProperties()
    issue_type = v.optional_enum(body, "type", IssueType, "issueProperties") or base.type
    status = v.optional_enum(body, "status", IssueStatus, "issueProperties") or base.status
    assignees = base.assignees
    listed = v.optional_id_list(body, "assignees", MAX_ASSIGNEES, "issueProperties")
    if listed is not None:
        assignees = tuple(listed)
    return IssueProperties(type=issue_type, status=status, assignees=assignees)


def parse_meeting(value: object, base: MeetingProperties | None = None) -> MeetingProperties:
    body = v.require_object(value, "meetingProperties")
    v.reject_unknown(body, {"timeUtc", "duration"}, "meetingProperties")
    time_utc = _int(body, "timeUtc", "meetingProperties")
    duration = _int(body, "duration", "meetingProperties")
    if time_utc is None:
        if base is None:
            raise BadRequest("Field 'meetingProperties.timeUtc' is required")
        time_utc = base.time_utc
    if duration is None:
        duration = base.duration if base is not None else 0
    return MeetingProperties(time_utc=time_utc, duration=duration)


def parse_new_message(body: object, max_bytes: int) -> NewMessage:
    fields = v.require_object(body)
    v.reject_unknown(fields, _NEW_FIELDS)
    text = check_content(fields, max_bytes)
    message_type = v.optional_enum(fields, "messageType", MessageType) or MessageType.REGULAR
    issue = meeting = None
    if fields.get("issueProperties") is not None and message_type is not MessageType.ISSUE:
        raise BadRequest("Field 'issueProperties' is only for messages of type Issue")
    if fields.get("meetingProperties") is not None and message_type is not MessageType.MEETING:
        raise BadRequest("Field 'meetingProperties' is only for messages of type Meeting")
    if message_type is MessageType.ISSUE:
        given = fields.get("issueProperties")
        issue = IssueProperties() if given is None else parse_issue(given)
    if message_type is MessageType.MEETING:
        if fields.get("meetingProperties") is None:
            raise BadRequest("Field 'meetingProperties' is required for messages of type Meeting")
        meeting = parse_meeting(fields["meetingProperties"])
    return NewMessage(
        text=text,
        markup_type=v.optional_enum(fields, "markupType", MarkupType) or MarkupType.TEXT_PLAIN,
        message_type=message_type,
        priority=v.optional_enum(fields, "priority", Priority) or Priority.NORMAL,
        issue_properties=issue,
        meeting_properties=meeting,
    )


def parse_batch(body: Mapping[str, Any], max_bytes: int) -> list[NewMessage]:
    """Either one message (``content`` ...) or ``{"messages": [...]}``."""
    if "messages" not in body:
        return [parse_new_message(body, max_bytes)]
    v.reject_unknown(body, {"messages"})
    items = body["messages"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise BadRequest(f"Field 'messages' must be a list of 1 to {MAX_BATCH} messages")
    parsed = []
    for index, item in enumerate(items):
        try:
            parsed.append(parse_new_message(item, max_bytes))
        except BadRequest as exc:
            raise BadRequest(f"messages[{index}]: {exc.text}") from None
    return parsed


@attrs.frozen
class MessagePatch:
    text: str | None
    markup_type: MarkupType | None
    priority: Priority | None
    issue: object | None
    meeting: object | None

    @property
    def only_issue_properties(self) -> bool:
        """Whether the patch changes an issue's properties and nothing else."""
        others = (self.text, self.markup_type, self.priority, self.meeting)
        return self.issue is not None and all(value is None for value in others)


def parse_patch(body: Mapping[str, Any], max_bytes: int) -> MessagePatch:
    v.reject_unknown(body, _PATCH_FIELDS)
    patch = MessagePatch(
        text=check_content(body, max_bytes) if body.get("content") is not None else None,
        markup_type=v.optional_enum(body, "markupType", MarkupType),
        priority=v.optional_enum(body, "priority", Priority),
        issue=body.get("issueProperties"),
        meeting=body.get("meetingProperties"),
    )
    if all(value is None for value in attrs.astuple(patch)):
        raise BadRequest("Nothing to change")
    return patch
