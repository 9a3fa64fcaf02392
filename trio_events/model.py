"""Domain values: frozen attrs classes, no I/O.

Field names are Python's; :mod:`trio_events.wire` turns them into the
camelCase JSON of the contract.
"""

from __future__ import annotations

import enum
import time

import attrs

__all__ = [
    "SYSTEM_USER",
    "Attachment",
    "Avatar",
    "Credential",
    "CredentialKind",
    "IssueProperties",
    "IssueStatus",
    "IssueType",
    "LastMessage",
    "MarkupType",
    "MeetingProperties",
    "Message",
    "MessageType",
    "NewMessage",
    "Priority",
    "ReadTimestamp",
    "Room",
    "RoomState",
    "RoomType",
    "RoomUserFields",
    "StoredEvent",
    "User",
    "UserStatus",
    "now_ms",
]


def now_ms() -> int:
    """Milliseconds since the Unix epoch, UTC: the contract's timestamp unit."""
    return time.time_ns() // 1_000_000


class UserStatus(enum.StrEnum):
    ACTIVE = "Active"
    SUSPENDED = "Suspended"
    DELETION_IN_PROGRESS = "DeletionInProgress"


class CredentialKind(enum.StrEnum):
    SESSION = "session"
    TOKEN = "token"


@attrs.frozen
class User:
    user_id: int
    user_name: str
    display_name: str
    is_admin: bool
    status: UserStatus
    created_utc: int
    last_modified_utc: int

    @property
    def is_active(self) -> bool:
        return self.status is UserStatus.ACTIVE


# The actor of trusted local tools (the CLI): an administrator that is no user.
SYSTEM_USER = User(
    user_id=0,
    user_name="system",
    display_name="System",
    is_admin=True,
    status=UserStatus.ACTIVE,
    created_utc=0,
    last_modified_utc=0,
)


@attrs.frozen
class Credential:
    """A session or Web API token, as stored: only the secret's hash is kept."""

    credential_id: int
    user_id: int
    kind: CredentialKind
    secret_hash: str
    created_utc: int
    expires_utc: int | None


@attrs.frozen
class Avatar:
    content_type: str
    data: bytes
    updated_utc: int


class RoomType(enum.StrEnum):
    PRIVATE = "Private"
    PUBLIC = "Public"


class MarkupType(enum.StrEnum):
    TEXT_PLAIN = "TextPlain"
    TEXT_HTML = "TextHtml"
    TEXT_MARKDOWN = "TextMarkdown"
    TEXT_CODE = "TextCode"
    TEXT_LATEX = "TextLatex"


class MessageType(enum.StrEnum):
    REGULAR = "Regular"
    ISSUE = "Issue"
    MEETING = "Meeting"


class Priority(enum.StrEnum):
    BLOCKER = "Blocker"
    CRITICAL = "Critical"
    HIGH = "High"
    NORMAL = "Normal"
    LOW = "Low"
    TRIVIAL = "Trivial"


class IssueType(enum.StrEnum):
    TASK = "Task"
    SUBTASK = "Subtask"
    BUG = "Bug"
    EPIC = "Epic"
    STORY = "Story"
    FEATURE_REQUEST = "FeatureRequest"
    MERGE_REQUEST = "MergeRequest"


class IssueStatus(enum.StrEnum):
    BACKLOG = "Backlog"
    TO_DO = "ToDo"
    IN_PROGRESS = "InProgress"
    TO_VERIFY = "ToVerify"
    DONE = "Done"
    DECLINED = "Declined"


@attrs.frozen
class IssueProperties:
    type: IssueType = IssueType.TASK
    status: IssueStatus = IssueStatus.TO_DO
    assignees: tuple[int, ...] = ()


@attrs.frozen
class MeetingProperties:
    time_utc: int
    duration: int = 0  # milliseconds, like every other time in the contract


@attrs.frozen
class ReadTimestamp:
    user_id: int
    read_utc: int


@attrs.frozen
class Room:
    room_id: int
    display_name: str
    room_type: RoomType
    is_archived: bool
    message_count: int  # top-level messages, for unread counts
    created_utc: int
    last_modified_utc: int


@attrs.frozen
class LastMessage:
    message_id: int
    user_id: int
    created_utc: int


@attrs.frozen
class RoomUserFields:
    """The per-user part of a room: what differs from one viewer to the next."""

    read_count: int = 0
    is_moderator: bool = False
    is_pinned: bool = False


@attrs.frozen
class RoomState:
    """A room with everything needed to render it for any viewer.

    ``per_user`` holds only users who differ from the default (read something,
    moderate, or pinned it); everyone else has read nothing.
    """

    room: Room
    last_message: LastMessage | None
    per_user: dict[int, RoomUserFields]


@attrs.frozen
class Attachment:
    attachment_id: int
    message_id: int
    room_id: int
    file_name: str
    file_size: int
    file_checksum: str  # SHA-1 hex of the bytes
    content_hash: str  # SHA-256 hex: where the bytes are stored
    created_utc: int
    last_modified_utc: int


@attrs.frozen
class Message:
    message_id: int
    parent_message_id: int
    user_id: int
    room_id: int
    text: str
    markup_type: MarkupType
    message_type: MessageType
    priority: Priority
    comment_count: int
    created_utc: int
    last_modified_utc: int
    last_edited_utc: int
    read_timestamps: tuple[ReadTimestamp, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    issue_properties: IssueProperties | None = None
    meeting_properties: MeetingProperties | None = None


@attrs.frozen
class NewMessage:
    """A validated message to insert."""

    text: str
    markup_type: MarkupType = MarkupType.TEXT_PLAIN
    message_type: MessageType = MessageType.REGULAR
    priority: Priority = Priority.NORMAL
    issue_properties: IssueProperties | None = None
    meeting_properties: MeetingProperties | None = None


@attrs.frozen
class StoredEvent:
    """One row of the event log.

    ``audience`` None means "everyone who may access ``room_id`` at this point
    of the log"; otherwise exactly those user ids.
    """

    event_id: int
    event_type: str
    room_id: int | None
    audience: tuple[int, ...] | None
    payload: str  # JSON of the event's data (a room template for room events)
    created_utc: int
