"""Application services: validate, authorize, then change the store in one transaction."""

from __future__ import annotations

import attrs
import trio

from ..broker import Broker
from ..config import Config
from ..store import Store
from .auth import AuthService, Principal
from .messages import MessageService
from .rooms import RoomService
from .users import UserService

__all__ = ["AuthService", "MessageService", "Principal", "RoomService", "Services", "UserService"]


@attrs.define
class Services:
    """Everything a request handler may use, built by :func:`trio_events.server.serve`.

    It holds references only: the store's connections are owned by the
    ``open_store`` block in ``serve()``, not by this object.
    """

    config: Config
    store: Store
    auth: AuthService
    users: UserService
    rooms: RoomService
    messages: MessageService
    broker: Broker
    started_at: float = attrs.field(factory=trio.current_time)

    @classmethod
    def build(cls, config: Config, store: Store) -> Services:
        return cls(
            config=config,
            store=store,
            auth=AuthService(store, config.auth),
            users=UserService(store, config.limits),
            rooms=RoomService(store, config.limits),
            messages=MessageService(store, config.limits),
            broker=Broker(store, config.events.send_queue_size),
        )
