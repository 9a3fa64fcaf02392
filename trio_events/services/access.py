"""The access rule and the room permission flags, as pure functions.

Access (API.md section 4): admins may access every room; a Public room is open
to every active user; a Private room only to its members.  A room the caller
may not access answers 404, so room ids do not leak.
"""

from __future__ import annotations

from collections.abc import Collection

import attrs

from ..errors import Forbidden, NotFound
from ..model import Room, RoomType, User
from ..store import Tx

__all__ = ["RoomAccess", "can_access", "permissions", "room_for"]


@attrs.frozen
class RoomAccess:
    room: Room
    user: User
    membership: bool | None  # None: not a member; otherwise whether a moderator

    @property
    def moderates(self) -> bool:
        """Admins and the room's moderators may administer it and edit any message."""
        return self.user.is_admin or bool(self.membership)

    def require_moderator(self) -> None:
        if not self.moderates:
            raise Forbidden("Only the room's moderators and administrators can do this")

    def require_writable(self) -> None:
        if self.room.is_archived:
            raise Forbidden("The room is archived and read-only")

    def require_author_or_moderator(self, author_id: int) -> None:
        if author_id != self.user.user_id and not self.moderates:
            raise Forbidden("Only the author, the room's moderators and administrators can do this")

    def require_involved_or_moderator(self, author_id: int, assignees: Collection[int]) -> None:
        """An issue's properties: its author and assignees may change them;
        anyone else needs ``canChangePropertiesOfUnrelatedIssues`` (moderators)."""
        involved = self.user.user_id == author_id or self.user.user_id in assignees
        if not involved and not self.moderates:
            raise Forbidden(
                "Only the issue's author and assignees, the room's moderators and"
                " administrators can change its properties"
            )


def can_access(user: User, room: Room, membership: bool | None) -> bool:
    if not user.is_active:
        return False
    return user.is_admin or room.room_type is RoomType.PUBLIC or membership is not None


def room_for(tx: Tx, user: User, room_id: int) -> RoomAccess:
    """The room if ``user`` may access it; 404 otherwise."""
    room = tx.get_room(room_id)
    if room is None:
        raise NotFound("Room not found")
    membership = tx.membership(room_id, user.user_id)
    if not can_access(user, room, membership):
        raise NotFound("Room not found")
    return RoomAccess(room=room, user=user, membership=membership)


# The 24 flags of the Virola permissions document, and the four that clients
# in the wild spell differently (both spellings are served).
ALIASES = {
    "canReactToMessagesWithEmojiInMainThread": "canReactToTextMessagesWithEmojiInMainThread",
    "canReactToMessagesWithEmojiInDiscussion": "canReactToTextMessagesWithEmojiInDiscussion",
    "uiCanSeeWhoReadMessageInMainThread": "uiCanSeeWhoReadMessagesInMainThread",
    "uiCanSeeWhoReadMessageInDiscussion": "uiCanSeeWhoReadMessagesInDiscussion",
}


def permissions(access: RoomAccess) -> dict[str, bool]:
    """What the caller may do in the room; the services enforce the same rules."""
    writable = not access.room.is_archived
    flags = {
        # messages and comments: any member with access, while not archived
        "canSendMessagesInMainThread": writable,
        "canSendMessagesInDiscussion": writable,
        "canEditOrDeleteOwnMessagesInMainThread": writable,
        "canEditOrDeleteOwnMessagesInDiscussion": writable,
        "canCreateIssues": writable,
        "canCreateMeetings": writable,
        # (an issue's author and assignees may change its properties without it)
        "canChangePropertiesOfUnrelatedIssues": writable and access.moderates,
        # attachments: to one's own messages (moderators: any), while not archived
        "canSendFilesIntoRoomInMainThread": writable,
        "canSendFilesIntoRoomInDiscussion": writable,
        "canAttachOrDeleteFilesInOwnMessagesInMainThread": writable,
        "canAttachOrDeleteFilesInOwnMessagesInDiscussion": writable,
        # features this server does not have
        "canReactToMessagesWithEmojiInMainThread": False,
        "canReactToMessagesWithEmojiInDiscussion": False,
        "canRecordMeetings": False,
        "canSendNudge": False,
        "canShareScreen": False,
        "canUseIntercom": False,
        "canIntercomListen": False,
        "canIntercomTalk": False,
        "canIntercomStreamVideo": False,
        "canIntercomWatchVideo": False,
        # what the client may show
        "uiCanSeeRoomSidebar": True,
        "uiCanSeeWhoReadMessageInMainThread": True,
        "uiCanSeeWhoReadMessageInDiscussion": True,
    }
    for name, alias in ALIASES.items():
        flags[alias] = flags[name]
    return flags
