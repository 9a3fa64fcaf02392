"""How connections served by hypercorn end, or go on to the next request.

(:mod:`trio_events.transport.asgi`.)  Each test talks raw TCP: whether a
second request on a connection is answered, whether the server half-closes or
drops the socket, and the bytes of an error answer are what is checked.
Every wait is bounded; "the server dropped the connection" means the kernel
refuses what the client sends, not only that the server half-closed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from wsproto.events import TextMessage

from trio_events.transport.asgi import LINGER

from .helpers import TEST_TIMEOUT, make_config, serving
from .rest_helpers import admin_actor, create_room, user_actors
from .stream_helpers import bearer, stream_config, wait_subscribers
from .transport_helpers import (
    RawWs,
    assert_json_error,
    bearer_token,
    closed_after,
    connect,
    dropped_after,
    handshake,
    read_hello,
    read_response,
    request_head,
)

MARGIN = 1.0  # scheduling slack on a loaded machine
GAP = 0.05  # between a request's head and its body, like a client's two writes
TRIES = 4  # without the fix every try with a GAP hung; a few show it is not luck
HEALTHZ = request_head("/healthz")
BODY = b'{"content": "a"}'


async def closed_within(stream: trio.abc.Stream, limit: float) -> float:
    """Seconds until the server half-closes ``stream``; ``limit`` plus one if it does not."""
    with trio.move_on_after(limit + 1.0):
        return await closed_after(stream)
    return limit + 1.0


async def dropped_within(stream: trio.abc.Stream, limit: float) -> float:
    """Seconds until the server drops ``stream``; ``limit`` plus one if it does not."""
    with trio.move_on_after(limit + 1.0):
        return await dropped_after(stream)
    return limit + 1.0


def body_head(method: str, target: str, auth: list[tuple[str, str]], length: int) -> bytes:
    headers = [*auth, ("Content-Type", "application/json"), ("Content-Length", str(length))]
    return request_head(target, headers, method=method)


# an answer given before the request's body was read (issue 3, P1)

EARLY = {  # method, target, whether as the admin, status
    "405": ("PUT", "/api/v1/login", False, 405),
    "401": ("POST", "/api/v1/rooms/1/messages", False, 401),
    "404-route": ("POST", "/api/v1/nope", False, 404),
    "404-avatar": ("PUT", "/api/v1/rooms/999/avatar.jpg", True, 404),
}


@pytest.mark.parametrize("case", list(EARLY))
async def test_the_next_request_after_an_early_answer_is_answered(
    tmp_path: Path, case: str
) -> None:
    """The body follows its head after GAP seconds, while the answer is ready
    at once.  The answer waits for the body, and the connection serves the
    next request."""
    method, target, as_admin, status = EARLY[case]
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, client):
            auth = [("Authorization", "Bearer not-a-token")]
            if as_admin:
                auth = bearer(await bearer_token(client, await admin_actor(client)))
            head = body_head(method, target, auth, len(BODY))
            for _ in range(TRIES):
                async with await connect(server) as stream:
                    await stream.send_all(head)
                    await trio.sleep(GAP)
                    await stream.send_all(BODY)
                    first, rest = await read_response(stream)
                    assert_json_error(first, status)
                    # The body came well within BODY_WAIT: the connection stays.
                    assert first.headers.get("connection", "").lower() != "close"
                    await stream.send_all(HEALTHZ)
                    second = None
                    with trio.move_on_after(5.0):
                        second, _ = await read_response(stream, rest)
                    assert second is not None, f"no answer to the request after a {status}"
                    assert second.status == 200


async def test_an_early_answer_to_a_body_that_does_not_come_closes(tmp_path: Path) -> None:
    """Half a body and then nothing: the answer comes with ``Connection: close``
    once the server stops waiting for the rest, and the server drops the connection."""
    head = body_head("POST", "/api/v1/nope", [], 1000)
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, client):
            async with await connect(server) as stream:
                await stream.send_all(head + b'{"content": "')
                response, rest = await read_response(stream)
                assert_json_error(response, 404)
                assert response.headers["connection"].lower() == "close"
                assert rest == b""
                assert await closed_within(stream, LINGER + MARGIN) < LINGER + MARGIN
                assert await dropped_within(stream, LINGER + MARGIN) < LINGER + MARGIN
            assert (await client.get("/healthz")).status_code == 200


async def test_an_answer_after_the_whole_body_keeps_the_connection(tmp_path: Path) -> None:
    """The control: a body the handler reads, then a second request."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, client):
            admin = await admin_actor(client)
            room = await create_room(client, admin, "lobby", "Public")
            auth = list(admin.headers.items())
            head = body_head("POST", f"/api/v1/rooms/{room}/messages", auth, len(BODY))
            async with await connect(server) as stream:
                await stream.send_all(head)
                await trio.sleep(GAP)
                await stream.send_all(BODY)
                first, rest = await read_response(stream)
                assert first.status == 200, first.body
                assert first.headers.get("connection", "").lower() != "close"
                await stream.send_all(HEALTHZ)
                second, _ = await read_response(stream, rest)
                assert second.status == 200


# Connection: close and HTTP/1.0 (issue 2, item 9)


@pytest.mark.parametrize(
    ("version", "headers"),
    [("HTTP/1.0", []), ("HTTP/1.1", [("Connection", "close")])],
    ids=["http-1.0", "connection-close"],
)
async def test_a_request_that_asks_for_close_gets_it(
    tmp_path: Path, version: str, headers: list[tuple[str, str]]
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, client):
            async with await connect(server) as stream:
                await stream.send_all(request_head("/healthz", headers, version=version))
                response, rest = await read_response(stream)
                assert response.status == 200
                assert response.headers["connection"].lower() == "close"
                assert rest == b""
                assert await closed_within(stream, MARGIN) < MARGIN
                assert await dropped_within(stream, LINGER + MARGIN) < LINGER + MARGIN
            assert (await client.get("/healthz")).status_code == 200


# requests h11 cannot parse (issue 2, item 3)

MALFORMED = {
    "request-line": (b"GARBAGE\r\n\r\n", 400),
    "content-length": (
        b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        400,
    ),
    "header-line": (b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n", 400),
    "bad-chunk": (
        b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    "transfer-encoding": (
        b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    ),
}


@pytest.mark.parametrize("reused", [False, True], ids=["first", "after-a-request"])
@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_http_gets_a_json_error_and_a_close(
    tmp_path: Path, case: str, reused: bool
) -> None:
    raw, status = MALFORMED[case]
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, client):
            async with await connect(server) as stream:
                rest = b""
                if reused:
                    await stream.send_all(HEALTHZ)
                    first, rest = await read_response(stream)
                    assert first.status == 200
                await stream.send_all(raw)
                response, rest = await read_response(stream, rest)
                assert_json_error(response, status)
                assert response.headers["connection"].lower() == "close"
                assert rest == b""
                assert await closed_within(stream, MARGIN) < MARGIN
            assert (await client.get("/healthz")).status_code == 200


# HTTP/2: this server speaks HTTP/1.1 only

H2C_UPGRADE = (
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
)
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.mark.parametrize("reused", [False, True], ids=["first", "after-a-request"])
async def test_an_h2c_upgrade_is_answered_over_http_1_1(tmp_path: Path, reused: bool) -> None:
    """hypercorn would switch to HTTP/2, past every HTTP/1.1 fix of ours; the
    upgrade is ignored and the request answered, and the connection stays usable."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, _), await connect(server) as stream:
            rest = b""
            if reused:
                await stream.send_all(HEALTHZ)
                first, rest = await read_response(stream)
                assert first.status == 200
            await stream.send_all(H2C_UPGRADE)
            response, rest = await read_response(stream, rest)
            assert response.status == 200, response
            await stream.send_all(HEALTHZ)
            again, _ = await read_response(stream, rest)
            assert again.status == 200


async def test_the_http2_preface_gets_http_1_1_errors(tmp_path: Path) -> None:
    """A client that assumes HTTP/2 gets JSON errors over HTTP/1.1, then a close."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, client):
            async with await connect(server) as stream:
                await stream.send_all(H2_PREFACE)
                response, _ = await read_response(stream)
                assert response.status >= 400
                assert response.body.startswith(b"{"), response
                assert await closed_within(stream, LINGER + MARGIN) < LINGER + MARGIN
            assert (await client.get("/healthz")).status_code == 200


# the ASGI event-stream route: an upgrade on a reused connection (issue 5, item 3)


async def stream_after_a_request(stream: trio.SocketStream, token: str) -> RawWs:
    """A request on ``stream``, then the event-stream upgrade on the same
    connection: the quart-trio (ASGI) route."""
    await stream.send_all(HEALTHZ)
    first, rest = await read_response(stream)
    assert first.status == 200
    return await handshake(stream, bearer(token), rest)


async def test_oversized_frame_on_the_asgi_route_is_1009_and_the_connection_ends(
    tmp_path: Path,
) -> None:
    """hypercorn's ``websocket_max_message_size`` closes with 1009; a client
    that never answers that close is dropped after LINGER, and its
    subscription is released."""
    config = stream_config(tmp_path)
    limit = config.events.max_client_frame
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            token = await bearer_token(client, alice)
            async with await connect(server) as stream:
                ws = await stream_after_a_request(stream, token)
                assert (await read_hello(ws))["userId"] == alice.user_id
                await wait_subscribers(server, 1)
                await ws.send(TextMessage(data="x" * (limit + 1)))
                assert await ws.close_code() == 1009
                # ... and the client never answers the close
                assert await closed_within(stream, LINGER + MARGIN) < LINGER + MARGIN
                assert await dropped_within(stream, LINGER + MARGIN) < LINGER + MARGIN
            with trio.fail_after(MARGIN):
                await wait_subscribers(server, 0)


async def test_a_frame_at_the_limit_on_the_asgi_route_is_accepted(tmp_path: Path) -> None:
    """The control: a Ping of exactly ``max_client_frame`` bytes gets its Pong."""
    config = stream_config(tmp_path)
    limit = config.events.max_client_frame
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            token = await bearer_token(client, alice)
            async with await connect(server) as stream:
                ws = await stream_after_a_request(stream, token)
                await read_hello(ws)
                envelope = '{"type":"Ping","data":""}'
                data = "x" * (limit - len(envelope))
                ping = json.dumps({"type": "Ping", "data": data}, separators=(",", ":"))
                assert len(ping) == limit
                await ws.send(TextMessage(data=ping))
                assert await ws.frame() == {"type": "Pong", "data": data}
