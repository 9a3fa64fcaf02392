"""Helpers shared by the integration tests: configs, servers, logins, error checks."""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import httpx
import trio

import trio_events
from trio_events.config import Config, load_config
from trio_events.model import User

ADMIN_NAME = "admin"
ADMIN_PASSWORD = "admin-password-1"
USER_PASSWORD = "user-password-1"
SESSION_COOKIE = "VirolaUserSessionId"
TEST_TIMEOUT = 30.0


def make_config(tmp_path: Path, **sections: Mapping[str, object]) -> Config:
    """A config rooted in ``tmp_path``, with ``sections`` merged over the test defaults."""
    overrides: dict[str, dict[str, object]] = {
        "server": {"port": 0, "data_dir": str(tmp_path)},
        "bootstrap": {"admin_password": ADMIN_PASSWORD},
    }
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return load_config(None, environ={}, overrides=overrides)


@contextlib.asynccontextmanager
async def serving(
    config: Config,
) -> AsyncIterator[tuple[trio_events.RunningServer, httpx.AsyncClient]]:
    """Run a server for ``config`` and a client pointed at it for the block."""
    async with (
        trio_events.open_server(config) as running,
        httpx.AsyncClient(base_url=running.url) as client,
    ):
        yield running, client


def session_headers(session_id: str) -> dict[str, str]:
    """Headers that present ``session_id`` as the session cookie, independent of any jar."""
    return {"Cookie": f"{SESSION_COOKIE}={session_id}"}


def bearer_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, name: str, password: str) -> str:
    """Log in and return the session id; the client's cookie jar is left empty."""
    response = await client.post("/api/v1/login", json={"userName": name, "password": password})
    assert response.status_code == 200, response.text
    client.cookies.clear()
    session_id = response.json()["userSessionId"]
    assert isinstance(session_id, str)
    return session_id


async def login_admin(client: httpx.AsyncClient) -> dict[str, str]:
    """Headers authenticating as the bootstrap administrator."""
    return session_headers(await login(client, ADMIN_NAME, ADMIN_PASSWORD))


async def create_user(
    running: trio_events.RunningServer,
    name: str,
    password: str = USER_PASSWORD,
    *,
    display_name: str | None = None,
    is_admin: bool = False,
) -> User:
    """Create a user through the services, as the CLI does."""
    return await running.services.users.create_user(None, name, password, display_name, is_admin)


async def login_user(
    client: httpx.AsyncClient,
    running: trio_events.RunningServer,
    name: str,
    *,
    is_admin: bool = False,
) -> tuple[User, dict[str, str]]:
    """Create a user and log it in; return it and its session headers."""
    user = await create_user(running, name, is_admin=is_admin)
    return user, session_headers(await login(client, name, USER_PASSWORD))


def assert_error(response: httpx.Response, status: int, text: str | None = None) -> dict[str, Any]:
    """The contract's error shape: JSON with errorText and httpStatusCode == status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    assert body["httpStatusCode"] == status
    assert isinstance(body["errorText"], str)
    assert body["errorText"]
    if text is not None:
        assert body["errorText"] == text
    return body


async def healthy(port: int) -> bool:
    """Whether a server on ``port`` (e.g. a child process) answers /healthz yet."""
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/healthz")
    except httpx.TransportError:
        return False
    return response.status_code == 200


def free_port() -> int:
    """A port the kernel says is free now (for a server started right after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fixed_port() -> int:
    """A free port in 30000-39999, for a server that restarts on the same address
    (outside the kernel's range for outgoing connections, so no client takes it
    meanwhile)."""
    for _ in range(100):
        port = random.randint(30_000, 39_999)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 30000-39999")


STOP_GRACE = 30.0  # seconds a signalled server gets to stop before it is killed


async def stop_process(process: trio.Process, signum: int = signal.SIGTERM) -> int:
    """Send ``signum`` (if it still runs), give it ``STOP_GRACE`` seconds, then
    kill it; its exit status."""
    if process.returncode is None:
        process.send_signal(signum)
        with trio.move_on_after(STOP_GRACE):
            await process.wait()
    return await reap(process)


async def reap(process: trio.Process) -> int:
    """Kill ``process`` if it still runs (a test that failed half-way) and wait for it."""
    if process.returncode is None:
        process.kill()
    code: int = await process.wait()
    return code


def serve_argv(port: int, data_dir: Path, config_file: Path, *extra: str) -> list[str]:
    """``python -m trio_events serve`` on ``port`` with this data directory and config."""
    return [
        *[sys.executable, "-m", "trio_events", "serve", *extra],
        *["--port", str(port), "--data-dir", str(data_dir), "--config", str(config_file)],
    ]


@attrs.define
class ChildProcess:
    """A child process a test starts, SIGKILLs and starts again on the same
    port; each start logs to its own numbered file in ``workdir``."""

    LOG_NAME: ClassVar[str] = "child"
    READY_POLL: ClassVar[float] = 0.05  # seconds between two looks at readiness

    workdir: Path
    port: int = attrs.field(factory=free_port, kw_only=True)
    process: trio.Process | None = attrs.field(default=None, kw_only=True)
    starts: int = attrs.field(default=0, kw_only=True)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.LOG_NAME}-{self.starts}.log"

    async def launch(
        self, argv: list[str], ready: Callable[[], Awaitable[bool]], deadline: float
    ) -> None:
        """Start ``argv`` in ``workdir``; return once ``ready()`` says so, by
        ``deadline`` (a ``trio.current_time()`` value)."""
        assert self.process is None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.process = await trio.lowlevel.open_process(
                argv, stdout=log, stderr=log, cwd=str(self.workdir)
            )
        with trio.fail_at(deadline):
            while not await ready():
                assert self.process.poll() is None, self.log_path.read_text()
                await trio.sleep(self.READY_POLL)

    async def kill(self) -> None:
        """SIGKILL: nothing of the process's own shutdown runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            await self.process.wait()
        self.process = None

    async def ensure_dead(self) -> None:
        if self.process is not None:
            with trio.CancelScope(shield=True):
                await reap(self.process)
        self.process = None
