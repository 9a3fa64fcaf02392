"""End-to-end: the web console in headless Chromium (Debian's package) driven by Playwright.

The server runs on Trio in a background thread (its own ``trio.run``); the test
drives Playwright's *sync* API from the test function, since Playwright's async
API needs asyncio.  Work on the server's side (creating users and rooms) goes
through ``trio.from_thread`` into that thread; REST calls a second user makes
use a plain ``httpx.Client``.  Every wait is bounded by Playwright's timeouts.

Without ``/usr/bin/chromium`` or the ``playwright`` package these tests are
skipped with the reason, except under ``CI=true``, where they fail.
``CONSOLE_SCREENSHOT=docs/console.png`` makes the first test save the
screenshot the README shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
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

from .helpers import ADMIN_NAME, ADMIN_PASSWORD, USER_PASSWORD, make_config

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


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run under CI=true: {reason}")
    pytest.skip(reason)


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not HAVE_PLAYWRIGHT:
        _unavailable("the playwright package is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(
            f"{CHROMIUM} is missing (apt-get install chromium, or scripts/ensure-chromium)"
        )
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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadServer]:
    with server_in_thread(make_config(tmp_path)) as running:
        yield running


@pytest.fixture(autouse=True)
def _bounded_expect() -> None:
    if HAVE_PLAYWRIGHT:
        expect.set_options(timeout=WAIT_MS)


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


@pytest.fixture
def consoles(browser: Browser, server: ThreadServer) -> Iterator[Consoles]:
    with open_consoles(browser, server.url) as opened:
        yield opened


def room(page: Page, room_id: int) -> Any:
    return page.locator(f'#room-list li[data-room-id="{room_id}"]')


def messages(page: Page) -> Any:
    return page.locator("#messages [data-message-id] .text")


def hellos(page: Page) -> list[dict[str, Any]]:
    """The data of each Hello frame the raw events panel shows, in order."""
    frames = [json.loads(text) for text in page.locator("#raw-events li").all_text_contents()]
    return [frame["data"] for frame in frames if frame["type"] == "Hello"]


def fixed_port() -> int:
    """A free port in 30000-39999, for a server that restarts on the same address."""
    for _ in range(100):
        port = random.randint(30_000, 39_999)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 30000-39999")


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


def test_two_users_chat_live(server: ThreadServer, consoles: Consoles) -> None:
    server.create_user("alice")
    server.create_user("bob")
    general = server.create_room("general", "Public")
    random = server.create_room("random", "Public")
    alice_page = consoles.open("alice")
    bob_page = consoles.open("bob")
    for page in (alice_page, bob_page):
        room(page, general).click()
        expect(page.locator("#room-title")).to_have_text("general")

    alice_page.fill("#composer-text", "hello bob")
    alice_page.click("#composer-send")
    expect(messages(bob_page)).to_have_text(["hello bob"])  # live, no reload
    expect(messages(alice_page)).to_have_text(["hello bob"])

    bob_page.fill("#composer-text", "hi alice, the console is live")
    bob_page.press("#composer-text", "Enter")  # Enter sends
    chat = ["hello bob", "hi alice, the console is live"]
    expect(messages(alice_page)).to_have_text(chat)
    expect(messages(bob_page)).to_have_text(chat)

    screenshot = os.environ.get("CONSOLE_SCREENSHOT")
    if screenshot:
        bob_page.click("#raw-toggle")
        expect(bob_page.locator("#raw-events li").first).to_be_visible()
        bob_page.screenshot(path=screenshot)
        bob_page.click("#raw-toggle")

    # Text is text: markup from a user is shown, never interpreted.
    hostile = '<img src=x onerror="window.__pwned=1"> <b>bold?</b>'
    bob_page.fill("#composer-text", hostile)
    bob_page.click("#composer-send")
    expect(messages(alice_page)).to_have_text([*chat, hostile])
    assert alice_page.locator("#messages img, #messages b").count() == 0
    assert alice_page.evaluate("window.__pwned === undefined")

    # A message in another room shows as an unread badge, which reading clears.
    with rest_session(server.url, "alice") as rest:
        posted = rest.post(f"/api/v1/rooms/{random}/messages", json={"content": "psst"})
        assert posted.status_code == 200, posted.text
    expect(room(bob_page, random).locator(".badge")).to_have_text("1")
    room(bob_page, random).click()
    expect(messages(bob_page)).to_have_text(["psst"])
    expect(room(bob_page, random).locator(".badge")).to_have_count(0)

    bob_page.click("#logout")
    expect(bob_page.locator("#login-user")).to_be_visible()
    expect(bob_page.locator("#connection-state")).to_have_attribute("data-state", "offline")
    expect(bob_page.locator("#room-list li")).to_have_count(0)
    bob_page.reload()  # the session cookie is gone: the status probe shows the login form
    expect(bob_page.locator("#login-user")).to_be_visible()


def test_removed_member_loses_the_room_live(server: ThreadServer, consoles: Consoles) -> None:
    alice = server.create_user("alice")
    secret = server.create_room("secret", "Private", [alice.user_id])
    lobby = server.create_room("lobby", "Public")
    page = consoles.open("alice")
    room(page, secret).click()
    expect(page.locator("#room-title")).to_have_text("secret")
    with rest_session(server.url, ADMIN_NAME, ADMIN_PASSWORD) as admin:
        admin.post(f"/api/v1/rooms/{secret}/messages", json={"content": "for members"})
        expect(messages(page)).to_have_text(["for members"])
        # Seen, so marked read (the TextMessagesUpdated with alice's read clears it).
        expect(page.locator("#messages .message.unread")).to_have_count(0)
        removed = admin.delete(f"/api/v1/rooms/{secret}/members/{alice.user_id}")
        assert removed.status_code == 200, removed.text
    expect(room(page, secret)).to_have_count(0)
    expect(page.locator("#room-title")).to_have_text("Pick a room")
    expect(messages(page)).to_have_count(0)
    expect(room(page, lobby)).to_have_count(1)
    expect(page.locator("#connection-state")).to_have_attribute("data-state", "live")


def test_dropped_connection_resumes_without_loss(server: ThreadServer, consoles: Consoles) -> None:
    server.create_user("alice")
    server.create_user("bob")
    general = server.create_room("general", "Public")
    page = consoles.open("alice")
    room(page, general).click()
    expect(page.locator("#room-title")).to_have_text("general")
    page.evaluate(
        """() => {
            const badge = document.getElementById("connection-state");
            window.__states = [];
            new MutationObserver(() => window.__states.push(badge.dataset.state))
                .observe(badge, {attributes: true, attributeFilter: ["data-state"]});
        }"""
    )
    with rest_session(server.url, "bob") as bob:
        bob.post(f"/api/v1/rooms/{general}/messages", json={"content": "before"})
        expect(messages(page)).to_have_text(["before"])

        page.evaluate("window.__teConsole.dropConnection({hold: true})")
        expect(page.locator("#connection-state")).to_have_attribute("data-state", "reconnecting")
        missed = [f"while away {n}" for n in range(3)]
        for text in missed:
            response = bob.post(f"/api/v1/rooms/{general}/messages", json={"content": text})
            assert response.status_code == 200, response.text
        expect(messages(page)).to_have_text(["before"])  # nothing arrives while down

        page.evaluate("window.__teConsole.reconnect()")
        expect(page.locator("#connection-state")).to_have_attribute("data-state", "live")
        expect(messages(page)).to_have_text(["before", *missed])  # each exactly once

        bob.post(f"/api/v1/rooms/{general}/messages", json={"content": "after"})
        expect(messages(page)).to_have_text(["before", *missed, "after"])

    states = page.evaluate("window.__states")
    assert states[states.index("reconnecting") :][-1] == "live", states
    # The stream was resumed with since (replayed), not rebuilt from REST.
    raw = page.locator("#raw-events li").all_text_contents()
    hellos = [frame for frame in raw if '"type":"Hello"' in frame.replace(" ", "")]
    assert len(hellos) == 2, hellos
    assert '"resumed":true' in hellos[1].replace(" ", ""), hellos[1]

    # Without the hold, the console reconnects by itself after its first backoff (1 s).
    page.evaluate("window.__teConsole.dropConnection()")
    expect(page.locator("#connection-state")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator("#connection-state")).to_have_attribute("data-state", "live")
    expect(messages(page)).to_have_text(["before", *missed, "after"])


def test_paging_comments_edit_and_delete(server: ThreadServer, consoles: Consoles) -> None:
    server.create_user("alice")
    general = server.create_room("general", "Public")
    with rest_session(server.url, "alice") as alice:
        batch = {"messages": [{"content": f"m{n}"} for n in range(60)]}
        posted = alice.post(f"/api/v1/rooms/{general}/messages", json=batch)
        assert posted.status_code == 200, posted.text
    page = consoles.open("alice")
    page.on("dialog", lambda dialog: dialog.accept())
    room(page, general).click()
    expect(messages(page)).to_have_count(50)
    expect(messages(page).first).to_have_text("m10")
    # The message list scrolls, not the page: the newest message, the composer
    # and the connection badge are all in view.
    expect(messages(page).last).to_be_in_viewport()
    expect(page.locator("#composer-text")).to_be_in_viewport()
    expect(page.locator("#connection-state")).to_be_in_viewport()
    assert page.evaluate("() => document.documentElement.scrollHeight <= innerHeight")
    page.click("#load-older")
    expect(messages(page)).to_have_count(60)
    expect(messages(page).first).to_have_text("m0")
    expect(page.locator("#load-older")).to_be_hidden()

    last = page.locator("#messages [data-message-id]").last
    last.locator("button.edit").click()
    last.locator("textarea").fill("m59, edited")
    last.locator("button.save").click()
    expect(messages(page).last).to_have_text("m59, edited")
    expect(page.locator("#messages [data-message-id]").last).to_contain_text("(edited)")

    page.locator("#messages [data-message-id]").last.locator("button.comments").click()
    expect(page.locator("#thread-view")).to_be_visible()
    page.fill("#thread-text", "a comment")
    page.click("#thread-send")
    expect(page.locator("#thread-messages [data-message-id] .text")).to_have_text(["a comment"])
    expect(page.locator("#messages button.comments").last).to_have_text("Comments (1)")

    first = page.locator("#messages [data-message-id]").first
    first.locator("button.delete").click()
    expect(messages(page)).to_have_count(59)
    expect(messages(page).first).to_have_text("m1")


def test_live_events_keep_an_edit_in_progress(server: ThreadServer, consoles: Consoles) -> None:
    """A post or a read receipt re-renders the room; the open edit box keeps its
    text and focus, and the composer keeps its draft and focus."""
    server.create_user("alice")
    bob = server.create_user("bob")
    general = server.create_room("general", "Public")
    with rest_session(server.url, "alice") as alice:
        posted = alice.post(f"/api/v1/rooms/{general}/messages", json={"content": "first draft"})
        mine = posted.json()["messageId"]
    page = consoles.open("alice")
    room(page, general).click()
    expect(messages(page)).to_have_text(["first draft"])
    item = page.locator(f'#messages [data-message-id="{mine}"]')
    item.locator("button.edit").click()
    box = item.locator("textarea.edit-text")
    expect(box).to_be_focused()
    box.fill("my unsaved edit")

    with rest_session(server.url, "bob") as rest:
        rest.post(f"/api/v1/rooms/{general}/messages", json={"content": "bob interrupts"})
        expect(messages(page)).to_have_text(["bob interrupts"])  # the edited one shows a box
        expect(box).to_have_value("my unsaved edit")
        expect(box).to_be_focused()
        page.keyboard.type(", still typing")  # the caret stayed where it was
        expect(box).to_have_value("my unsaved edit, still typing")

        rest.post(f"/api/v1/messages/{mine}/read")
        wait_for_frame(
            page,
            f"""f.type === "TextMessagesUpdated" && f.data.messages.some((m) =>
                m.messageId === {mine}
                && m.readTimestamps.some((r) => r.userId === {bob.user_id}))""",
        )
        expect(box).to_have_value("my unsaved edit, still typing")
        expect(box).to_be_focused()

        page.click("#composer-text")
        page.keyboard.type("half a thought")
        rest.post(f"/api/v1/rooms/{general}/messages", json={"content": "bob again"})
        expect(messages(page)).to_have_text(["bob interrupts", "bob again"])
        expect(page.locator("#composer-text")).to_be_focused()
        page.keyboard.type(", finished")
        expect(page.locator("#composer-text")).to_have_value("half a thought, finished")
        expect(box).to_have_value("my unsaved edit, still typing")

    item.locator("button.save").click()
    expect(messages(page)).to_have_text(
        ["my unsaved edit, still typing", "bob interrupts", "bob again"]
    )
    expect(page.locator("#composer-text")).to_have_value("half a thought, finished")


# What Chromium logs while the server is down, or refuses a handshake on purpose.
SERVER_DOWN = ["ERR_CONNECTION_REFUSED", "WebSocket connection to"]


def test_console_resumes_after_a_long_outage(browser: Browser, tmp_path: Path) -> None:
    """The server stops (closing the stream itself) and stays down past several
    failed reconnects; the console keeps ``since`` all along, and when the
    server is back on the same data, the stream resumes and nothing is lost."""
    config = make_config(tmp_path, server={"port": fixed_port()})
    url = f"http://127.0.0.1:{config.server.port}"
    with open_consoles(browser, url) as consoles:
        consoles.expected += SERVER_DOWN
        with server_in_thread(config) as server:
            server.create_user("alice")
            server.create_user("bob")
            general = server.create_room("general", "Public")
            page = consoles.open("alice")
            room(page, general).click()
            with rest_session(url, "bob") as bob:
                bob.post(f"/api/v1/rooms/{general}/messages", json={"content": "before"})
            expect(messages(page)).to_have_text(["before"])
        badge = page.locator("#connection-state")
        expect(badge).to_have_attribute("data-state", "reconnecting")
        assert page.evaluate("window.__teConsole.lastClose") == 1001  # the server closed it
        since = page.evaluate("window.__teConsole.lastEventId")  # no frame comes after the close
        assert isinstance(since, int)
        # Three failed handshakes (1 + 2 + 4 s of backoff) used to drop since.
        page.wait_for_function("() => window.__teConsole.failures >= 3", timeout=3 * WAIT_MS)
        assert page.evaluate("window.__teConsole.lastEventId") == since
        expect(badge).to_have_attribute("data-state", "reconnecting")
        expect(badge).to_have_attribute("title", re.compile(r"next attempt in \d+ s, 3 failed"))

        with server_in_thread(config), rest_session(url, "bob") as bob:
            missed = [f"while down {n}" for n in range(3)]
            for text in missed:
                response = bob.post(f"/api/v1/rooms/{general}/messages", json={"content": text})
                assert response.status_code == 200, response.text
            expect(badge).to_have_attribute("data-state", "live", timeout=3 * WAIT_MS)
            expect(messages(page)).to_have_text(["before", *missed])  # each exactly once
            bob.post(f"/api/v1/rooms/{general}/messages", json={"content": "after"})
            expect(messages(page)).to_have_text(["before", *missed, "after"])
            assert page.evaluate("window.__teConsole.failures") == 0  # reset by the Hello
        first, *_, last = hellos(page)
        assert not first["resumed"]
        assert last["resumed"], last  # replayed from the log, not reloaded over REST


def test_console_resumes_when_the_server_closes_the_stream(
    browser: Browser, tmp_path: Path
) -> None:
    """The server, not the client, ends the stream (a restart); what was posted
    while the console was away is replayed on resume, each message once."""
    config = make_config(tmp_path, server={"port": fixed_port()})
    url = f"http://127.0.0.1:{config.server.port}"
    with open_consoles(browser, url) as consoles:
        consoles.expected += SERVER_DOWN  # e.g. a read receipt sent while it restarts
        with server_in_thread(config) as server:
            server.create_user("alice")
            server.create_user("bob")
            general = server.create_room("general", "Public")
            page = consoles.open("alice")
            room(page, general).click()
            with rest_session(url, "bob") as bob:
                bob.post(f"/api/v1/rooms/{general}/messages", json={"content": "before"})
            expect(messages(page)).to_have_text(["before"])
            page.evaluate("window.__teConsole.hold()")  # stay away until reconnect()
        expect(page.locator("#connection-state")).to_have_attribute("data-state", "reconnecting")
        assert page.evaluate("window.__teConsole.lastClose") == 1001

        with server_in_thread(config), rest_session(url, "bob") as bob:
            missed = [f"while away {n}" for n in range(3)]
            for text in missed:
                response = bob.post(f"/api/v1/rooms/{general}/messages", json={"content": text})
                assert response.status_code == 200, response.text
            page.evaluate("window.__teConsole.reconnect()")
            expect(page.locator("#connection-state")).to_have_attribute("data-state", "live")
            expect(messages(page)).to_have_text(["before", *missed])
            bob.post(f"/api/v1/rooms/{general}/messages", json={"content": "after"})
            expect(messages(page)).to_have_text(["before", *missed, "after"])
        last = hellos(page)[-1]
        assert last["resumed"], last
        assert last["replayed"] >= len(missed), last


def test_console_reloads_when_the_server_refuses_since(browser: Browser, tmp_path: Path) -> None:
    """Restored from an older backup, the server has never heard of the console's
    last event id and refuses it (400): the console then starts a fresh stream
    and reloads the room over REST, showing what the server really has."""
    data, backup = tmp_path / "data", tmp_path / "backup"
    port = fixed_port()
    config = make_config(data, server={"port": port})
    url = f"http://127.0.0.1:{port}"
    with open_consoles(browser, url) as consoles:
        consoles.expected += [*SERVER_DOWN, "status of 400"]
        with server_in_thread(config) as server:
            server.create_user("alice")
            server.create_user("bob")
            general = server.create_room("general", "Public")
            page = consoles.open("alice")  # its session is in the backup too
            room(page, general).click()
            with rest_session(url, "bob") as bob:
                bob.post(f"/api/v1/rooms/{general}/messages", json={"content": "kept"})
            expect(messages(page)).to_have_text(["kept"])
            page.evaluate("window.__teConsole.hold()")
        shutil.copytree(data, backup)

        with server_in_thread(config), rest_session(url, "bob") as bob:
            page.evaluate("window.__teConsole.reconnect()")
            expect(page.locator("#connection-state")).to_have_attribute("data-state", "live")
            for text in ("lost in the restore", "this one too"):
                bob.post(f"/api/v1/rooms/{general}/messages", json={"content": text})
            expect(messages(page)).to_have_text(["kept", "lost in the restore", "this one too"])
            page.evaluate("window.__teConsole.hold()")

        restored = make_config(backup, server={"port": port})
        streams: list[str] = []
        page.on("websocket", lambda ws: streams.append(ws.url))
        with server_in_thread(restored):
            page.evaluate("window.__teConsole.reconnect()")
            expect(page.locator("#connection-state")).to_have_attribute("data-state", "live")
            expect(messages(page)).to_have_text(["kept"])
        *_, last = hellos(page)
        assert not last["resumed"], last
        # One refusal is enough: the next stream starts without since.
        assert ["since=" in stream for stream in streams] == [True, False], streams


def test_coming_back_marks_read_only_what_is_on_screen(
    server: ThreadServer, consoles: Consoles
) -> None:
    """Messages that arrive while the tab is hidden stay unread; coming back
    marks those on screen read, and not the ones scrolled out of view."""
    alice = server.create_user("alice")
    server.create_user("bob")
    busy = server.create_room("busy", "Public")
    page = consoles.open("alice")
    room(page, busy).click()
    expect(page.locator("#room-title")).to_have_text("busy")
    page.evaluate(
        """() => {
            window.__hidden = true;  // the tab goes to the background
            Object.defineProperty(document, "hidden", {get: () => window.__hidden});
            window.__inflight = 0;
            const fetch = window.fetch;
            window.fetch = (...args) => {
                window.__inflight += 1;
                return fetch(...args).finally(() => { window.__inflight -= 1; });
            };
        }"""
    )
    with rest_session(server.url, "bob") as bob:
        batch = {"messages": [{"content": f"b{n}"} for n in range(40)]}
        assert bob.post(f"/api/v1/rooms/{busy}/messages", json=batch).status_code == 200
    expect(page.locator("#messages .message.unread")).to_have_count(40)
    on_screen, off_screen = page.evaluate(
        """() => {
            const list = document.getElementById("messages").getBoundingClientRect();
            const top = Math.max(list.top, 0), bottom = Math.min(list.bottom, innerHeight);
            const on = [], off = [];
            for (const item of document.querySelectorAll("#messages .message")) {
                const box = item.getBoundingClientRect();
                const id = Number(item.dataset.messageId);
                if (box.top >= top && box.bottom <= bottom) on.push(id);
                else if (box.bottom < top - 2 || box.top > bottom + 2) off.push(id);
            }
            return [on, off];
        }"""
    )
    assert on_screen, on_screen
    assert len(off_screen) > 20, off_screen

    page.evaluate(
        """() => {
            window.__hidden = false;
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    for message_id in on_screen:
        item = page.locator(f'#messages [data-message-id="{message_id}"]')
        expect(item).not_to_have_class(re.compile(r"\bunread\b"))
    page.wait_for_function("() => window.__inflight === 0", timeout=WAIT_MS)
    with rest_session(server.url, "alice") as rest:
        listed = rest.get(f"/api/v1/rooms/{busy}/messages").json()["messages"]
    read = {
        m["messageId"]
        for m in listed
        if any(r["userId"] == alice.user_id for r in m["readTimestamps"])
    }
    assert set(on_screen) <= read
    assert not read & set(off_screen), sorted(read & set(off_screen))
    expect(room(page, busy).locator(".badge")).to_have_text(str(40 - len(read)))


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


def trio_events_command(*args: str) -> list[str]:
    """The ``trio-events`` console script of the environment running the tests."""
    return [str(Path(sys.executable).parent / "trio-events"), *args]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRIO_EVENTS_")}


@contextlib.contextmanager
def serve_process(workdir: Path, data_dir: Path) -> Iterator[ServeProcess]:
    """Run ``trio-events serve`` on a fresh port from ``workdir`` (no config.toml
    there: the built-in defaults); SIGTERM it after the block, expecting exit 0."""
    port = fixed_port()
    log = workdir / "serve.log"
    argv = trio_events_command("serve", "--port", str(port), "--data-dir", str(data_dir))
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            argv, cwd=workdir, env=clean_env(), stdout=subprocess.DEVNULL, stderr=stderr
        )
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
        env=clean_env(),
        capture_output=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


def test_first_start_admin_and_a_new_user_chat(browser: Browser, tmp_path: Path) -> None:
    """The README's first steps, end to end: ``trio-events serve`` on a fresh
    data directory prints the administrator's generated password; the admin
    logs in to the console, a user created from the CLI logs in in another
    browser context, and the two chat, each seeing the other's messages live."""
    data = tmp_path / "data"
    with serve_process(tmp_path, data) as server:
        password = server.wait_for_log(ADMIN_LINE).group(1)
        server.wait_healthy()
        cli(
            tmp_path,
            "user",
            "add",
            "alice",
            "--password",
            "alice-secret-1",
            "--data-dir",
            str(data),
        )
        cli(tmp_path, "room", "add", "General", "--type", "Public", "--data-dir", str(data))
        with open_consoles(browser, server.url) as consoles:
            admin = consoles.open("admin", password)
            alice = consoles.open("alice", "alice-secret-1")
            for page in (admin, alice):
                page.locator("#room-list li", has_text="General").click()
                expect(page.locator("#room-title")).to_have_text("General")

            admin.fill("#composer-text", "Welcome, Alice")
            admin.press("#composer-text", "Enter")
            expect(messages(alice)).to_have_text(["Welcome, Alice"])
            alice.fill("#composer-text", "Thanks, admin!")
            alice.press("#composer-text", "Enter")
            chat = ["Welcome, Alice", "Thanks, admin!"]
            expect(messages(admin)).to_have_text(chat)
            expect(messages(alice)).to_have_text(chat)
            authors = admin.locator("#messages [data-message-id] .author")
            expect(authors).to_have_text(["Administrator", "alice"])


def test_raw_events_panel_shows_each_frame(server: ThreadServer, consoles: Consoles) -> None:
    """The Raw events button opens and closes the panel; each frame of the
    stream appears in it as JSON as it arrives."""
    server.create_user("alice")
    general = server.create_room("general", "Public")
    page = consoles.open("alice")
    toggle, panel = page.locator("#raw-toggle"), page.locator("#raw-panel")
    expect(panel).to_be_hidden()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    expect(panel).to_be_visible()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    frames = page.locator("#raw-events li")
    expect(frames.first).to_contain_text('"type":"Hello"')
    page.click("#raw-clear")
    expect(frames).to_have_count(0)

    with rest_session(server.url, "alice") as alice:
        posted = alice.post(f"/api/v1/rooms/{general}/messages", json={"content": "on the wire"})
        message_id = posted.json()["messageId"]
    created = frames.filter(has_text="TextMessagesCreated")
    expect(created).to_have_count(1)
    expect(created).to_be_visible()
    frame = json.loads(created.text_content() or "")
    assert frame["type"] == "TextMessagesCreated"
    assert isinstance(frame["eventId"], int)
    [message] = frame["data"]["messages"]
    assert message["messageId"] == message_id
    assert message["text"] == "on the wire"

    toggle.click()
    expect(panel).to_be_hidden()
    expect(toggle).to_have_attribute("aria-pressed", "false")


def test_actions_follow_the_room_rights_live(server: ThreadServer, consoles: Consoles) -> None:
    """Edit and Delete appear on others' messages when the user becomes a
    moderator (a live RoomUpdated), and archiving the room takes away every
    action the server would then refuse: posting, commenting, editing."""
    alice = server.create_user("alice")
    bob = server.create_user("bob")
    team = server.create_room("team", "Private", [alice.user_id, bob.user_id])
    with rest_session(server.url, "bob") as rest:
        rest.post(f"/api/v1/rooms/{team}/messages", json={"content": "bob's note"})
    with rest_session(server.url, "alice") as rest:
        rest.post(f"/api/v1/rooms/{team}/messages", json={"content": "alice's note"})
    page = consoles.open("alice")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    room(page, team).click()
    expect(messages(page)).to_have_text(["bob's note", "alice's note"])
    bobs, alices = page.locator("#messages [data-message-id]").all()
    expect(bobs.locator("button.edit, button.delete")).to_have_count(0)
    expect(alices.locator("button.edit, button.delete")).to_have_count(2)
    assert any(f"/api/v1/room-permissions/{team}" in url for url in asked), asked

    with rest_session(server.url, ADMIN_NAME, ADMIN_PASSWORD) as admin:
        promoted = admin.put(
            f"/api/v1/rooms/{team}/members/{alice.user_id}", json={"isModerator": True}
        )
        assert promoted.status_code == 200, promoted.text
        expect(bobs.locator("button.edit, button.delete")).to_have_count(2)
        bobs.locator("button.edit").click()
        bobs.locator("textarea").fill("moderated")

        archived = admin.patch(f"/api/v1/rooms/{team}", json={"isArchived": True})
        assert archived.status_code == 200, archived.text
    expect(page.locator("#composer")).to_be_hidden()
    expect(page.locator("#messages textarea")).to_have_count(0)
    expect(page.locator("#notice")).to_contain_text("no longer edit")
    expect(page.locator("#messages button.edit, #messages button.delete")).to_have_count(0)
    alices.locator("button.comments").click()
    expect(page.locator("#thread-view")).to_be_visible()
    expect(page.locator("#thread-composer")).to_be_hidden()
    expect(page.locator("#thread-parent button.edit")).to_have_count(0)
