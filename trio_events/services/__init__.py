"""Application services: validate, authorize, then change the store in one transaction."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import attrs
import trio

from ..broker import Broker
from ..bus import RedisBus
from ..config import Config
from ..errors import BadRequest, NotFound
from ..events import EventType
from ..files import FileStore
from ..metrics import Metrics
from ..model import now_ms
from ..store import Store, Tx
from .attachments import AttachmentService
from .auth import AuthService, Principal
from .messages import MessageService
from .outbox import Outbox
from .rooms import RoomService
from .users import UserService

__all__ = ["AuthService", "MessageService", "Principal", "RoomService", "Services", "UserService"]


_CUSTOM_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
_RESERVED_TYPES = {str(t) for t in EventType} | {"Hello", "ResyncRequired", "Ping", "Pong"}


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
    attachments: AttachmentService
    broker: Broker
    metrics: Metrics
    bus: RedisBus | None = None  # None: one process, the in-process bus
    started_at: float = attrs.field(factory=trio.current_time)

    async def publish(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        room_id: int | None = None,
        user_ids: Collection[int] | None = None,
    ) -> int:
        """Append an application-defined event (see ``RunningServer.publish``)."""
        if not _CUSTOM_TYPE.fullmatch(event_type) or event_type in _RESERVED_TYPES:
            raise BadRequest(
                f"Event type {event_type!r} must be a name of letters and digits"
                " other than the built-in ones"
            )
        if (room_id is None) == (user_ids is None):
            raise BadRequest("Give exactly one of room_id and user_ids")
        audience = None if user_ids is None else sorted(set(user_ids))
        now = now_ms()

        def write(tx: Tx) -> int:
            if room_id is not None and tx.get_room(room_id) is None:
                raise NotFound("Room not found")
            return Outbox(tx, now).emit(event_type, data, room_id, audience)

        return await self.store.write(write)

    @classmethod
    def build(cls, config: Config, store: Store) -> Services:
        files = FileStore(config.data_dir / "files")
        broker = Broker(store, config.events.send_queue_size)
        bus = RedisBus(config.bus, broker, store) if config.bus.backend == "redis" else None
        metrics = Metrics(broker, store, bus)
        store.observe = metrics.store_observer()
        store.add_commit_listener(lambda events: metrics.committed(len(events)))
        return cls(
            config=config,
            store=store,
            auth=AuthService(store, config.auth),
            users=UserService(store, config.limits),
            rooms=RoomService(store, files, config.limits),
            messages=MessageService(store, files, config.limits),
            attachments=AttachmentService(store, files, config.limits),
            broker=broker,
            metrics=metrics,
            bus=bus,
        )
