"""The first administrator, so that a fresh install has a usable login."""

from __future__ import annotations

import logging
import secrets

from ..errors import Conflict
from . import Services

__all__ = ["ensure_admin"]

log = logging.getLogger("trio_events.bootstrap")


async def ensure_admin(svc: Services, password: str | None = None) -> str | None:
    """Create the bootstrap admin when the database has no user at all.

    Returns the password when a user was created with a *generated* password
    (to be shown once), ``""`` when it was created with a given or configured
    one, and ``None`` when users already existed.
    """
    if await svc.store.read(lambda tx: tx.count_users()) > 0:
        return None
    name = svc.config.bootstrap.admin_user
    given = password or svc.config.bootstrap.admin_password
    chosen = given or secrets.token_urlsafe(12)
    try:
        await svc.users.create_user(None, name, chosen, display_name="Administrator", is_admin=True)
    except Conflict:  # another process bootstrapped at the same moment
        return None
    if given:  # a generated password is logged (once) by the caller
        log.info("created the first administrator user=%s", name)
    return "" if given else chosen
