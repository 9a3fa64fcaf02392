"""Shared fixtures: a config in a temporary directory, a running server, a client.

Each integration test gets its own data directory and its own server listening
on a free port, so tests never share users, sessions or throttles.  Tests that
need other settings build their own config with ``make_config`` and open the
server with ``serving`` (both in :mod:`tests.helpers`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from trio_websocket import WebSocketConnection

import trio_events
from trio_events.config import Config

from .contract_helpers import Contract
from .contract_helpers import contract as load_contract
from .helpers import make_config
from .transport_helpers import RawWs


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's TRIO_EVENTS_* variables out of every test."""
    for name in list(os.environ):
        if name.startswith("TRIO_EVENTS_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Undo ``configure_logging`` after a test that ran the CLI in-process.

    Otherwise every later test logs at its level into a handler of that
    test's captured stderr, and the records pile up in the test process
    (the reconnect storm's memory check saw them as growth).
    """
    loggers = [logging.getLogger(name) for name in ("trio_events", "hypercorn.error")]
    saved = [(lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    yield
    for lg, (level, handlers, propagate) in zip(loggers, saved, strict=True):
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate


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


# The machine-readable contract (docs/openapi.yaml, docs/events.asyncapi.yaml):
# every REST response and every stream frame a test sees must conform to it.


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "contract_exempt(reason): do not check this test's traffic against the contract",
    )


@pytest.fixture(scope="session")
def contract() -> Contract:
    """Both contract documents, loaded and indexed once per session."""
    return load_contract()


@pytest.fixture(autouse=True)
def _contract_check(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, contract: Contract
) -> Iterator[None]:
    """Check every httpx response and every server text frame of the test
    (trio-websocket's ``get_message`` and the raw wsproto client's ``text``)
    against the documents; fail the test at teardown with what departed."""
    if request.node.get_closest_marker("contract_exempt") is not None:
        yield
        return
    violations: list[str] = []
    send = httpx.AsyncClient.send
    get_message = WebSocketConnection.get_message
    raw_text = RawWs.text

    async def checked_send(
        self: httpx.AsyncClient, req: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        response = await send(self, req, **kwargs)
        with contract.timed():
            violations.extend(contract.check_response(response, body_read=not kwargs.get("stream")))
        return response

    async def checked_get_message(self: WebSocketConnection) -> str | bytes:
        message = await get_message(self)
        if isinstance(message, str):
            with contract.timed():
                violations.extend(contract.check_frame(message, "trio-websocket frame"))
        return message

    async def checked_text(self: RawWs) -> str:
        text = await raw_text(self)
        with contract.timed():
            violations.extend(contract.check_frame(text, "wsproto frame"))
        return text

    monkeypatch.setattr(httpx.AsyncClient, "send", checked_send)
    monkeypatch.setattr(WebSocketConnection, "get_message", checked_get_message)
    monkeypatch.setattr(RawWs, "text", checked_text)
    yield
    if violations:
        shown = "\n  ".join(dict.fromkeys(violations))
        pytest.fail(
            f"{len(violations)} response(s) or frame(s) departed from the contract"
            f" (trio_events/contract/*.yaml):\n  {shown}",
            pytrace=False,
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    checked = load_contract().checked
    if checked:
        terminalreporter.write_line(
            f"contract: {checked['responses']} responses and {checked['frames']} stream frames"
            f" checked against trio_events/contract/*.yaml in {load_contract().seconds:.1f} s"
        )
