"""Shared fixtures: a config in a temporary directory, a running server, a client.

Each integration test gets its own data directory and its own server listening
on a free port, so tests never share users, sessions or throttles.  Tests that
need other settings build their own config with ``make_config`` and open the
server with ``serving`` (both in :mod:`tests.helpers`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import trio_events
from trio_events.config import Config

from .helpers import make_config


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's TRIO_EVENTS_* variables out of every test."""
    for name in list(os.environ):
        if name.startswith("TRIO_EVENTS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def server(config: Config) -> AsyncIterator[trio_events.RunningServer]:
    async with trio_events.open_server(config) as running:
        yield running


@pytest.fixture
async def client(server: trio_events.RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        yield http
