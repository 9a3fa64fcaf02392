"""The web console at ``/`` and ``server.static_dir`` (no browser: headers, routing, safety)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

import trio_events

from .helpers import TEST_TIMEOUT, assert_error, make_config, serving
from .transport_helpers import RawResponse, connect, read_response, request_head

CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'"
)
SECRET = "admin_password = 'do-not-leak'\n"


def assert_console_headers(response: httpx.Response, content_type: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    # The required directives come first and unchanged; hardening ones may follow.
    assert response.headers["content-security-policy"].startswith(CSP)


async def raw_get(running: trio_events.RunningServer, target: str) -> RawResponse:
    """GET ``target`` byte for byte, without a client normalizing ``..`` or ``%2e``."""
    stream = await connect(running)
    async with stream:
        await stream.send_all(request_head(target, [("Connection", "close")]))
        response, _ = await read_response(stream)
    return response


async def test_index_is_the_console(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.get("/")
    assert_console_headers(response, "text/html; charset=utf-8")
    page = response.text
    for marker in ('id="connection-state"', 'id="login-user"', 'id="raw-toggle"'):
        assert marker in page
    assert '<script src="/static/app.js"' in page
    assert "http://" not in page  # no CDN, no external fonts
    assert "https://" not in page
    assert "<script>" not in page  # nothing inline: the CSP forbids it
    assert "style=" not in page


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/app.css", "text/css; charset=utf-8"),
        ("/static/index.html", "text/html; charset=utf-8"),
    ],
)
async def test_console_files(client: httpx.AsyncClient, path: str, content_type: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.get(path)
    assert_console_headers(response, content_type)
    assert response.content


async def test_console_script_never_renders_with_inner_html(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        script = (await client.get("/static/app.js")).text
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "/api/v1/events" in script or "${API}/events" in script


@pytest.mark.parametrize(
    "path",
    ["/static/nope.js", "/static/", "/static/__init__.py", "/app.js", "/nope.html", "/static/a/b"],
)
async def test_unknown_file_is_404_json(client: httpx.AsyncClient, path: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.get(path)
    assert_error(response, 404)


async def test_api_routes_keep_their_errors(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        assert_error(await client.get("/api/v1/login"), 405)
        assert_error(await client.get("/api/v1/nope"), 404)
        assert_error(await client.post("/healthz"), 405)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A client's build in ``tmp_path/site``, a secret next to it, and traps inside it."""
    root = tmp_path / "site"
    (root / "assets").mkdir(parents=True)
    (root / "static").mkdir()
    (root / "index.html").write_text("<!doctype html><p>my own client</p>")
    (root / "assets" / "main.js").write_text("console.log('mine');")
    (root / "static" / "app.js").write_text("// replaces the console's script")
    (root / ".env").write_text(SECRET)
    (root / "healthz").write_text("shadowed")
    (root / "metrics").write_text("shadowed")
    (root / "api" / "v1").mkdir(parents=True)
    (root / "api" / "v1" / "status").write_text("shadowed")
    (tmp_path / "config.toml").write_text(SECRET)
    os.symlink(tmp_path / "config.toml", root / "leak.toml")
    os.symlink(tmp_path, root / "outside")
    os.symlink(root / "index.html", root / "inside.html")
    return root


@pytest.fixture
async def site_server(
    tmp_path: Path, site: Path
) -> AsyncIterator[tuple[trio_events.RunningServer, httpx.AsyncClient]]:
    config = make_config(tmp_path, server={"static_dir": str(site)})
    async with serving(config) as pair:
        yield pair


async def test_static_dir_takes_precedence(
    site_server: tuple[trio_events.RunningServer, httpx.AsyncClient],
) -> None:
    _, client = site_server
    with trio.fail_after(TEST_TIMEOUT):
        index = await client.get("/")
        script = await client.get("/assets/main.js")
        replaced = await client.get("/static/app.js")
        builtin_css = await client.get("/static/app.css")
        inside = await client.get("/inside.html")
    assert index.status_code == 200
    assert index.text == "<!doctype html><p>my own client</p>"
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.headers["cache-control"] == "no-cache"
    assert index.headers["x-content-type-options"] == "nosniff"
    assert script.text == "console.log('mine');"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert replaced.text == "// replaces the console's script"
    # What the directory lacks still comes from the console.
    assert_console_headers(builtin_css, "text/css; charset=utf-8")
    assert inside.status_code == 200  # a symlink that stays inside is fine


@pytest.mark.parametrize(
    "target",
    [
        "/../config.toml",
        "/%2e%2e/config.toml",
        "/assets/%2e%2e/%2e%2e/config.toml",
        "/..%2fconfig.toml",
        "/assets/..%5c..%5cconfig.toml",
        "/%2Fetc%2Fpasswd",
        "//etc/passwd",
        "/%2F..%2Fconfig.toml",
        "/static/..%2F..%2Fconfig.toml",
        "/leak.toml",
        "/outside/config.toml",
        "/.env",
        "/assets",
        "/assets/",
        "/missing.js",
        "/index.html%00.js",
        "/C:%5CWindows%5Cwin.ini",
    ],
)
async def test_static_dir_refuses_what_is_not_inside(
    site_server: tuple[trio_events.RunningServer, httpx.AsyncClient], target: str
) -> None:
    running, _ = site_server
    with trio.fail_after(TEST_TIMEOUT):
        response = await raw_get(running, target)
    assert b"do-not-leak" not in response.body
    assert response.status == 404, (target, response.status, response.body)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["httpStatusCode"] == 404
    assert body["errorText"]


async def test_absolute_path_target_is_refused(
    site_server: tuple[trio_events.RunningServer, httpx.AsyncClient],
) -> None:
    running, _ = site_server
    with trio.fail_after(TEST_TIMEOUT):
        response = await raw_get(running, f"//{running.url.split('//')[1]}/../config.toml")
    assert b"do-not-leak" not in response.body
    assert response.status in (400, 404), response


async def test_api_routes_win_over_static_dir(
    site_server: tuple[trio_events.RunningServer, httpx.AsyncClient],
) -> None:
    _, client = site_server
    with trio.fail_after(TEST_TIMEOUT):
        health = await client.get("/healthz")
        status = await client.get("/api/v1/status")
        metrics = await client.get("/metrics")
        wrong_method = await client.get("/api/v1/login")
        unknown = await client.get("/api/v1/nope")
    assert health.json()["httpStatusCode"] == 200
    assert_error(status, 401)
    assert metrics.status_code == 200
    assert metrics.text != "shadowed"
    assert_error(wrong_method, 405)
    assert_error(unknown, 404)
