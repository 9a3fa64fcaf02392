"""Helpers of the browser tests (tests/test_browser.py): servers to point
Chromium at, logged-in console pages, and what to read from them.

A server runs either on Trio in a background thread (its own ``trio.run``),
since the tests drive Playwright's *sync* API (its async API needs asyncio),
or as a ``trio-events serve`` child process, as a person starts it.  Every
wait is bounded: by Playwright's timeouts or by START_TIMEOUT.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import pytest
import trio

import trio_events
from trio_events.config import Config
from trio_events.model import User

from .helpers import USER_PASSWORD, fixed_port

try:
    from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
except ImportError:  # reported by the fixture: skipped, or a failure under CI=true
    HAVE_PLAYWRIGHT = False
else:
    HAVE_PLAYWRIGHT = True

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000
START_TIMEOUT = 30.0

T = TypeVar("T")


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run under CI=true: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def launched_chromium() -> Iterator[Browser]:
    """Debian's Chromium under Playwright (never a downloaded browser)."""
    if not HAVE_PLAYWRIGHT:
        unavailable("the playwright package is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium, or scripts/ensure-chromium)")
    playwright: Playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=START_TIMEOUT * 1000
        )
        try:
            yield launched
        finally:
            launched.close()
    finally:
        playwright.stop()


@attrs.define
class ThreadServer:
    """A server running in its own thread and Trio run."""

    running: trio_events.RunningServer
    token: trio.lowlevel.TrioToken
    stop: trio.Event

    @property
    def url(self) -> str:
        return self.running.url

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def create_user(self, name: str) -> User:
        users = self.running.services.users
        return self.call(users.create_user, None, name, USER_PASSWORD, name.capitalize(), False)

    def create_room(self, name: str, room_type: str, members: Sequence[int] = ()) -> int:
        body = {"displayName": name, "roomType": room_type, "memberIds": list(members)}
        room = self.call(self.running.services.rooms.create, None, body)
        room_id = room["roomId"]
        assert isinstance(room_id, int)
        return room_id


@contextlib.contextmanager
def server_in_thread(config: Config) -> Iterator[ThreadServer]:
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = trio.Event()
        async with trio_events.open_server(config) as running:
            box["server"] = ThreadServer(running, trio.lowlevel.current_trio_token(), stop)
            ready.set()
            await stop.wait()

    def main() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=main, name="trio-events-server", daemon=True)
    thread.start()
    assert ready.wait(START_TIMEOUT), "the server did not start"
    if "error" in box:
        raise box["error"]
    server: ThreadServer = box["server"]
    try:
        yield server
    finally:
        trio.from_thread.run_sync(server.stop.set, trio_token=server.token)
        thread.join(START_TIMEOUT)
        assert not thread.is_alive(), "the server did not stop"
        if "error" in box:
            raise box["error"]


@contextlib.contextmanager
def rest_session(base_url: str, name: str, password: str = USER_PASSWORD) -> Iterator[httpx.Client]:
    """An httpx client logged in as ``name`` (its jar keeps the session cookie)."""
    with httpx.Client(base_url=base_url, timeout=WAIT_MS / 1000) as client:
        response = client.post("/api/v1/login", json={"userName": name, "password": password})
        assert response.status_code == 200, response.text
        yield client


@attrs.define
class Consoles:
    """Browser contexts (each with its own cookies) logged in to the console at ``url``."""

    browser: Browser
    url: str
    pages: list[Page] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)
    # Console errors a test provokes on purpose (a server down, a refused since).
    expected: list[str] = attrs.field(factory=list)

    def _console(self, name: str, kind: str, text: str) -> None:
        # The status probe before logging in answers 401 by design; Chromium logs it.
        if kind != "error" or "status of 401" in text:
            return
        if not any(part in text for part in self.expected):
            self.errors.append(f"{name}: {text}")

    def open(self, name: str, password: str = USER_PASSWORD) -> Page:
        """A new context logged in as ``name``, its stream live."""
        context = self.browser.new_context(viewport={"width": 1100, "height": 650})
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        self.pages.append(page)
        page.on("pageerror", lambda exc: self.errors.append(f"{name}: {exc}"))
        page.on("console", lambda msg: self._console(name, msg.type, msg.text))
        page.goto(self.url + "/")
        expect(page.locator("#login-user")).to_be_visible()
        expect(page.locator("#connection-state")).to_have_attribute("data-state", "offline")
        page.fill("#login-user", name)
        page.fill("#login-password", password)
        page.click("#login-submit")
        expect(page.locator("#connection-state")).to_have_attribute("data-state", "live")
        expect(page.locator("#login-view")).to_be_hidden()
        return page


@contextlib.contextmanager
def open_consoles(browser: Browser, url: str) -> Iterator[Consoles]:
    """Consoles for the block; their contexts closed, and no page error left unseen."""
    opened = Consoles(browser, url)
    try:
        yield opened
    finally:
        for page in opened.pages:
            page.context.close()
    assert not opened.errors, opened.errors


def room(page: Page, room_id: int) -> Any:
    return page.locator(f'#room-list li[data-room-id="{room_id}"]')


def messages(page: Page) -> Any:
    return page.locator("#messages [data-message-id] .text")


def hellos(page: Page) -> list[dict[str, Any]]:
    """The data of each Hello frame the raw events panel shows, in order."""
    frames = [json.loads(text) for text in page.locator("#raw-events li").all_text_contents()]
    return [frame["data"] for frame in frames if frame["type"] == "Hello"]


def wait_for_frame(page: Page, condition: str) -> None:
    """Wait until a frame of the raw events panel satisfies ``condition``, a
    JavaScript expression over ``f`` (the parsed frame)."""
    page.wait_for_function(
        f"""() => [...document.querySelectorAll("#raw-events li")].some((li) => {{
            const f = JSON.parse(li.textContent);
            return {condition};
        }})""",
        timeout=WAIT_MS,
    )


# What Chromium logs while the server is down, or refuses a handshake on purpose.
SERVER_DOWN = ["ERR_CONNECTION_REFUSED", "WebSocket connection to"]


ADMIN_LINE = re.compile(r"created the first administrator user=admin password=(\S+)")


@attrs.define
class ServeProcess:
    """``trio-events serve`` as a child process, as the README's first command runs it."""

    process: subprocess.Popen[bytes]
    log: Path
    url: str

    def wait_for_log(self, pattern: re.Pattern[str]) -> re.Match[str]:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = pattern.search(self.log.read_text())
            if found:
                return found
            assert self.process.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError(f"{pattern.pattern!r} never appeared: {self.log.read_text()}")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=self.url, timeout=1.0) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/healthz").status_code == 200:
                        return
                assert self.process.poll() is None, self.log.read_text()
                time.sleep(0.1)
        raise AssertionError(f"no /healthz answer: {self.log.read_text()}")


def alice_reads_what_bob_posted(
    server: ThreadServer, consoles: Consoles, url: str
) -> tuple[Page, int]:
    """alice's console on a public room "general", where bob posted "before"
    and she sees it; her page and the room's id."""
    server.create_user("alice")
    server.create_user("bob")
    general = server.create_room("general", "Public")
    page = consoles.open("alice")
    room(page, general).click()
    with rest_session(url, "bob") as bob:
        bob.post(f"/api/v1/rooms/{general}/messages", json={"content": "before"})
    expect(messages(page)).to_have_text(["before"])
    return page, general


def trio_events_command(*args: str) -> list[str]:
    """The ``trio-events`` console script of the environment running the tests."""
    return [str(Path(sys.executable).parent / "trio-events"), *args]


@contextlib.contextmanager
def serve_process(workdir: Path, data_dir: Path) -> Iterator[ServeProcess]:
    """Run ``trio-events serve`` on a fresh port from ``workdir`` (no config.toml
    there: the built-in defaults); SIGTERM it after the block, expecting exit 0."""
    port = fixed_port()
    log = workdir / "serve.log"
    argv = trio_events_command("serve", "--port", str(port), "--data-dir", str(data_dir))
    with log.open("wb") as stderr:
        process = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.DEVNULL, stderr=stderr)
    serving = ServeProcess(process, log, f"http://127.0.0.1:{port}")
    try:
        yield serving
        process.send_signal(signal.SIGTERM)
        assert process.wait(START_TIMEOUT) == 0, log.read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(START_TIMEOUT)


def cli(workdir: Path, *args: str) -> None:
    done = subprocess.run(
        trio_events_command(*args),
        cwd=workdir,
        capture_output=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
