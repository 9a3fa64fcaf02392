"""Storage: the :class:`Store` interface and the backend chosen by the config."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ..config import Config
from .base import Store as Store
from .base import StoreStatistics as StoreStatistics
from .base import Tx as Tx
from .base import UserUpdate as UserUpdate

__all__ = ["Store", "StoreStatistics", "Tx", "UserUpdate", "open_store"]


@contextlib.asynccontextmanager
async def open_store(config: Config) -> AsyncIterator[Store]:
    """Open the configured backend for the duration of the block."""
    if config.storage.backend == "postgresql":
        from .postgres import open_postgres_store

        async with open_postgres_store(config.storage.url, config.storage) as pg:
            yield pg
        return
    from .sqlite import open_sqlite_store

    async with open_sqlite_store(config.sqlite_path, config.storage) as store:
        yield store
