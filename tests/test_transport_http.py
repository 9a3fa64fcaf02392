"""The listener's dispatcher: request heads, refusals and REST through hypercorn.

``serve_http`` reads each connection's first request head itself (bounded by
``server.header_timeout`` and ``server.max_header_bytes``), serves an ``/api/v1/events``
upgrade on its own wsproto transport and hands everything else, the bytes
already read included, to hypercorn through ``PrefixedStream``.  These tests
talk raw TCP wherever an HTTP library would hide what is checked.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio
import trio.testing
from wsproto.events import CloseConnection

from trio_events.services.auth import NO_CREDENTIALS
from trio_events.transport.http import PrefixedStream, is_events_upgrade

from .helpers import TEST_TIMEOUT, make_config, serving
from .rest_helpers import admin_actor, create_room, history, user_actors
from .stream_helpers import bearer, stream_config, wait_subscribers
from .transport_helpers import (
    EVENTS,
    bearer_token,
    closed_after,
    connect,
    handshake,
    raw_ws,
    read_hello,
    read_response,
    request_head,
    upgrade_headers,
)

# the first request head is bounded by server.header_timeout (it was request_timeout
# before the hardening commit) and server.max_header_bytes
HEAD_LIMITS = {"header_timeout": 0.5, "max_header_bytes": 16 * 1024}
UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"


def head(request_line: bytes, headers: bytes = UPGRADE) -> bytes:
    return request_line + b"\r\nHost: x\r\n" + headers + b"\r\n"


# units: the dispatcher's decision and the prefixed stream


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (head(b"GET /api/v1/events HTTP/1.1"), True),
        (head(b"GET /api/v1/events HTTP/1.1", b"upgrade: WebSocket\r\n"), True),
        (head(b"GET /api/v1/events HTTP/1.1", b"UPGRADE:   WEBSOCKET  \r\n"), True),
        (head(b"GET /api/v1/events?resume=5&x=1 HTTP/1.1"), True),
        (head(b"GET /api/v1/events? HTTP/1.1"), True),
        (head(b"GET /api/v1/events HTTP/1.0"), True),  # wsproto judges the version
        (head(b"POST /api/v1/events HTTP/1.1"), False),
        (head(b"get /api/v1/events HTTP/1.1"), False),  # methods are case-sensitive
        (head(b"GET /api/v1/rooms HTTP/1.1"), False),
        (head(b"GET /api/v1/eventsX HTTP/1.1"), False),
        (head(b"GET /api/v1/events/ HTTP/1.1"), False),
        (head(b"GET /api/v1/Events HTTP/1.1"), False),
        (head(b"GET /api/v1/events HTTP/1.1", b"Connection: Upgrade\r\n"), False),
        (head(b"GET /api/v1/events HTTP/1.1", b"X-Upgrade: websocket\r\n"), False),
        (head(b"GET /api/v1/events HTTP/1.1", b"Upgrade: h2c\r\n"), False),
        (head(b"GET /api/v1/events"), False),  # HTTP/0.9 style: no version
        (head(b"GET  /api/v1/events HTTP/1.1"), False),
        (head(b"GET /api/v1/events HTTP/1.1 extra"), False),
        (head(b"garbage"), False),
        (b"", False),
        (b"\r\n\r\n", False),
    ],
)
def test_is_events_upgrade(data: bytes, expected: bool) -> None:
    assert is_events_upgrade(data) is expected


async def test_prefixed_stream_yields_the_prefix_first() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        ours, peer = trio.testing.memory_stream_pair()
        stream = PrefixedStream(ours, b"abcdef")
        await peer.send_all(b"from the wire")
        assert await stream.receive_some(4) == b"abcd"  # max_bytes is honoured
        assert await stream.receive_some(1) == b"e"
        assert await stream.receive_some(100) == b"f"  # no more than the prefix
        assert await stream.receive_some(5) == b"from "
        assert await stream.receive_some() == b"the wire"

        whole = PrefixedStream(ours, b"head")
        await peer.send_all(b"body")
        assert await whole.receive_some() == b"head"  # max_bytes=None: all of it
        assert await whole.receive_some() == b"body"


async def test_prefixed_stream_with_an_empty_prefix_reads_the_stream() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        ours, peer = trio.testing.memory_stream_pair()
        stream = PrefixedStream(ours, b"")
        await peer.send_all(b"direct")
        assert await stream.receive_some(3) == b"dir"
        await peer.send_eof()
        assert await stream.receive_some() == b"ect"
        assert await stream.receive_some() == b""


async def test_prefixed_stream_forwards_sends_and_attributes() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        ours, peer = trio.testing.memory_stream_pair()
        stream = PrefixedStream(ours, b"x")
        assert isinstance(stream, trio.abc.HalfCloseableStream)
        assert stream.send_stream is ours.send_stream  # what hypercorn looks up
        assert stream.receive_stream is ours.receive_stream
        with pytest.raises(AttributeError):
            _ = stream.socket
        await stream.wait_send_all_might_not_block()
        await stream.send_all(b"reply")
        assert await peer.receive_some() == b"reply"
        await stream.send_eof()
        assert await peer.receive_some() == b""
        await stream.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await ours.send_all(b"late")


# the real server: handshakes that wsproto refuses, heads too big or too slow


@pytest.mark.parametrize(
    ("headers", "status", "advertised"),
    [
        (upgrade_headers(key=None), 400, None),
        (upgrade_headers(version="8"), 426, "13"),
        (upgrade_headers(version=None), 400, "13"),
    ],
    ids=["no-key", "version-8", "no-version"],
)
async def test_bad_handshake_answers_4xx_and_closes(
    tmp_path: Path, headers: list[tuple[str, str]], status: int, advertised: str | None
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            token = await bearer_token(client, alice)
            async with await connect(server) as stream:
                await stream.send_all(request_head(EVENTS, [*headers, *bearer(token)]))
                response, rest = await read_response(stream)
                assert response.status == status, response
                assert response.headers.get("sec-websocket-version") == advertised
                assert rest == b""
                assert await closed_after(stream) < 2.0
            assert server.services.broker.statistics().subscribers == 0
            assert (await client.get("/healthz")).status_code == 200


@pytest.mark.parametrize("size", [20 * 1024, 64 * 1024])
@pytest.mark.parametrize("target", ["/healthz", EVENTS])
async def test_oversized_head_is_refused_and_the_server_keeps_serving(
    tmp_path: Path, target: str, size: int
) -> None:
    """A complete head over max_header_bytes must not be served, whoever reads it.

    The 20 KiB head arrives in one read, terminator included, so the size
    check must look at the head actually read, not only at an incomplete one.
    """
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path, server=HEAD_LIMITS)) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            token = await bearer_token(client, alice)
            headers = upgrade_headers(*bearer(token)) if target == EVENTS else []
            big = request_head(target, [*headers, ("X-Padding", "a" * size)])
            assert len(big) > 16 * 1024
            async with await connect(server) as stream:
                data = b""
                try:
                    await stream.send_all(big)
                    while b"\r\n" not in data and (chunk := await stream.receive_some()):
                        data += chunk
                except trio.BrokenResourceError:
                    pass  # reset before (or while) the answer arrived
            if data:  # else closed without an answer, which is allowed
                status_line = data.partition(b"\r\n")[0]
                status = int(status_line.split(b" ")[1])
                assert 400 <= status < 500, f"a {len(big)}-byte head got {status_line!r}"
            assert server.services.broker.statistics().subscribers == 0
            assert (await client.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n", b"GET /healthz HTTP/1.1\r\nHo"],
    ids=["nothing", "half-upgrade", "half-get"],
)
async def test_silent_client_is_disconnected_after_header_timeout(
    tmp_path: Path, sent: bytes
) -> None:
    config = make_config(tmp_path, server=HEAD_LIMITS)
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, _):
            started = trio.current_time()
            async with await connect(server) as stream:
                if sent:
                    await stream.send_all(sent)
                await closed_after(stream)
            elapsed = trio.current_time() - started
            assert 0.4 <= elapsed < 2.5, elapsed
            assert server.services.broker.statistics().subscribers == 0


async def test_trickling_head_is_cut_at_header_timeout(tmp_path: Path) -> None:
    """The timeout bounds the whole head, not the gap between two bytes."""
    config = make_config(tmp_path, server=HEAD_LIMITS)
    head_bytes = request_head(EVENTS, upgrade_headers())
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            started = trio.current_time()
            async with await connect(server) as stream, trio.open_nursery() as nursery:

                async def trickle() -> None:
                    for byte in head_bytes[:-4]:  # never complete
                        try:
                            await stream.send_all(bytes([byte]))
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            return
                        await trio.sleep(0.05)

                nursery.start_soon(trickle)
                await closed_after(stream)
                nursery.cancel_scope.cancel()
            elapsed = trio.current_time() - started
            assert 0.4 <= elapsed < 2.5, elapsed
            assert server.services.broker.statistics().subscribers == 0
            assert (await client.get("/healthz")).status_code == 200


# refusals in the contract's format


async def test_refused_upgrade_is_a_json_401_with_connection_close(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, _):
            async with await connect(server) as stream:
                await stream.send_all(request_head(EVENTS, upgrade_headers()))
                response, rest = await read_response(stream)
                assert await closed_after(stream) < 2.0
            assert response.status == 401
            assert response.headers["content-type"].startswith("application/json")
            assert response.headers["connection"].lower() == "close"
            assert response.json() == {"errorText": NO_CREDENTIALS, "httpStatusCode": 401}
            assert rest == b""
            assert server.services.broker.statistics().subscribers == 0


async def test_too_many_streams_is_a_429_with_retry_after(tmp_path: Path) -> None:
    config = stream_config(tmp_path, events={"max_streams_per_user": 1})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            token = await bearer_token(client, alice)
            async with raw_ws(server, bearer(token)) as (_, hello):
                assert hello["userId"] == alice.user_id
                async with await connect(server) as stream:
                    await stream.send_all(request_head(EVENTS, upgrade_headers(*bearer(token))))
                    response, _ = await read_response(stream)
                    assert await closed_after(stream) < 2.0
            assert response.status == 429
            assert int(response.headers["retry-after"]) > 0
            assert response.headers["connection"].lower() == "close"
            body = response.json()
            assert body["httpStatusCode"] == 429
            assert isinstance(body["errorText"], str)
            assert body["errorText"]
            await wait_subscribers(server, 0)


# REST through the dispatcher and hypercorn


async def test_keep_alive_and_pipelined_requests(tmp_path: Path) -> None:
    healthz = request_head("/healthz")
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, client):
            async with await connect(server) as stream:
                rest = b""
                for _ in range(2):  # one after the other on one connection
                    await stream.send_all(healthz)
                    response, rest = await read_response(stream, rest)
                    assert response.status == 200
                    assert rest == b""
                await stream.send_all(healthz * 3)  # pipelined in one segment
                for _ in range(3):
                    response, rest = await read_response(stream, rest)
                    assert response.status == 200
                    assert response.headers.get("connection", "").lower() != "close"

            addresses = set()
            for _ in range(3):
                reply = await client.get("/healthz")
                assert reply.status_code == 200
                addresses.add(reply.extensions["network_stream"].get_extra_info("client_addr"))
            assert len(addresses) == 1  # httpx kept using one connection


async def test_large_post_body_follows_the_prefix(tmp_path: Path) -> None:
    texts = [f"{i}" * 52_000 for i in range(4)]  # ~200 KiB, under every limit
    payload = json.dumps({"messages": [{"content": t} for t in texts]}).encode()
    assert len(payload) > 200 * 1024
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, client):
            admin = await admin_actor(client)
            room = await create_room(client, admin, "lobby", "Public")
            url = f"/api/v1/rooms/{room}/messages"
            headers = [
                *admin.headers.items(),
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
            ]
            async with await connect(server) as stream:
                # one write: the first read holds the head and the start of the body
                await stream.send_all(request_head(url, headers, method="POST") + payload)
                response, _ = await read_response(stream)
            assert response.status == 200, response.body[:200]
            raw_ids = response.json()["messageIds"]
            assert len(raw_ids) == 4

            response_httpx = await client.post(url, content=payload, headers=dict(headers))
            assert response_httpx.status_code == 200, response_httpx.text
            httpx_ids = response_httpx.json()["messageIds"]

            stored = {m["messageId"]: m["text"] for m in await history(client, admin, room)}
            for ids in (raw_ids, httpx_ids):
                assert [stored[i] for i in ids] == texts


async def test_the_app_sees_the_client_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_events")
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (_, client):
            assert (await client.get("/healthz")).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_events.http"]
    assert any("path=/healthz" in line and "remote=127.0.0.1" in line for line in lines), lines


# an upgrade that is not the first request: the ASGI route serves it


async def test_a_compression_offer_on_a_reused_connection_is_refused(tmp_path: Path) -> None:
    """hypercorn would negotiate permessage-deflate there (and inflate a client
    frame whole before checking its size); the fast transport never does."""
    deflate = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            token = await bearer_token(client, alice)
            async with await connect(server) as stream:
                await stream.send_all(request_head("/healthz"))
                first, rest = await read_response(stream)
                assert first.status == 200
                await stream.send_all(request_head(EVENTS, [*upgrade_headers(), deflate]))
                refused, _ = await read_response(stream, rest)
            assert refused.status == 400
            assert "open the event stream on a new connection" in refused.json()["errorText"]
            # A new connection: accepted, and without the extension.
            async with await connect(server) as stream:
                ws = await handshake(stream, [*bearer(token), deflate])
                # (wsproto's client, which proposed nothing itself, would fail
                # the handshake on a response that accepted an extension)
                assert (await read_hello(ws))["userId"] == alice.user_id
                await ws.send(CloseConnection(code=1000))
                assert await ws.close_code() == 1000
            await wait_subscribers(server, 0)


async def test_upgrade_after_a_request_goes_to_the_asgi_route(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_events")
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            token = await bearer_token(client, alice)

            async with await connect(server) as stream:
                await stream.send_all(request_head("/healthz"))
                first, rest = await read_response(stream)
                assert first.status == 200
                await stream.send_all(request_head(EVENTS, upgrade_headers()))
                refused, _ = await read_response(stream, rest)
            assert refused.status == 401
            assert refused.headers["content-type"].startswith("application/json")
            assert refused.json() == {"errorText": NO_CREDENTIALS, "httpStatusCode": 401}

            async with await connect(server) as stream:
                await stream.send_all(request_head("/healthz"))
                first, rest = await read_response(stream)
                assert first.status == 200
                ws = await handshake(stream, bearer(token), rest)
                hello = await read_hello(ws)
                assert hello["userId"] == alice.user_id
                await ws.send(CloseConnection(code=1000))
                assert await ws.close_code() == 1000
            await wait_subscribers(server, 0)
    opened = [r.getMessage() for r in caplog.records if "stream opened" in r.getMessage()]
    assert len(opened) == 1
    assert f"user={alice.user_id} transport=asgi" in opened[0]
