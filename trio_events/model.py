"""Domain values: frozen attrs classes, no I/O.

Field names are Python's; :mod:`trio_events.wire` turns them into the
camelCase JSON of the contract.
"""

from __future__ import annotations

import enum
import time

import attrs

__all__ = ["Avatar", "Credential", "CredentialKind", "User", "UserStatus", "now_ms"]


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
