"""End-to-end: the web console in headless Chromium (Debian's package) driven by Playwright.

Most tests run the server on Trio in a background thread and drive
Playwright's *sync* API from the test function (see tests/browser_helpers.py);
work on the server's side (creating users and rooms) goes through
``trio.from_thread``, REST calls of a second user through ``httpx.Client``.
The resume tests stop that server and start it again on the same port and
data; the first-start test runs ``trio-events serve`` as a child process, as
the README does.  Every wait is bounded by Playwright's timeouts or
START_TIMEOUT.

Without ``/usr/bin/chromium`` or the ``playwright`` package these tests are
skipped with the reason, except under ``CI=true``, where they fail.
``CONSOLE_SCREENSHOT=docs/console.png`` makes the first test save the
screenshot the README shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .browser_helpers import (
    ADMIN_LINE,
    HAVE_PLAYWRIGHT,
    SERVER_DOWN,
    WAIT_MS,
    Consoles,
    ThreadServer,
    alice_reads_what_bob_posted,
    cli,
    hellos,
    launched_chromium,
    messages,
    open_consoles,
    rest_session,
    room,
    serve_process,
    server_in_thread,
    wait_for_frame,
)
from .helpers import ADMIN_NAME, ADMIN_PASSWORD, fixed_port, make_config

with contextlib.suppress(ImportError):  # reported by the browser fixture
    from playwright.sync_api import Browser, expect


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadServer]:
    with server_in_thread(make_config(tmp_path)) as running:
        yield running


@pytest.fixture(autouse=True)
def _bounded_expect() -> None:
    if HAVE_PLAYWRIGHT:
        expect.set_options(timeout=WAIT_MS)


@pytest.fixture
def consoles(browser: Browser, server: ThreadServer) -> Iterator[Consoles]:
    with open_consoles(browser, server.url) as opened:
        yield opened


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


def test_console_resumes_after_a_long_outage(browser: Browser, tmp_path: Path) -> None:
    """The server stops (closing the stream itself) and stays down past several
    failed reconnects; the console keeps ``since`` all along, and when the
    server is back on the same data, the stream resumes and nothing is lost."""
    config = make_config(tmp_path, server={"port": fixed_port()})
    url = f"http://127.0.0.1:{config.server.port}"
    with open_consoles(browser, url) as consoles:
        consoles.expected += SERVER_DOWN
        with server_in_thread(config) as server:
            page, general = alice_reads_what_bob_posted(server, consoles, url)
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
            page, general = alice_reads_what_bob_posted(server, consoles, url)
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
