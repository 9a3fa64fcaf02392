"""The events transport on the listener's own socket, seen by a raw wsproto client.

Control frames (Ping/Pong, Close), fragmentation, the server's heartbeat, a
peer that stops reading, and the same stream over TLS.  After each scenario
the broker must be left with no subscriber.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from trio_websocket import open_websocket_url
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

import trio_events
from trio_events.config import Config

from .helpers import TEST_TIMEOUT, serving
from .rest_helpers import admin_actor, create_room, latest_event_id, post, post_batch, user_actors
from .stream_helpers import CREATED, ROOM_UPDATED, bearer, parse, stream_config, wait_subscribers
from .transport_helpers import (
    Json,
    RawWs,
    bearer_token,
    closed_after,
    handshake,
    raw_ws,
    read_hello,
    read_response,
    request_head,
)


async def until(client: RawWs, event_id: int) -> list[tuple[str, int]]:
    """(type, eventId) of every frame up to ``event_id``, which must arrive."""
    seen: list[tuple[str, int]] = []
    while not seen or seen[-1][1] < event_id:
        frame = parse(await client.text())
        seen.append((frame["type"], frame["eventId"]))
    assert seen[-1][1] == event_id, seen
    return seen


# control frames and fragments


async def test_ping_control_frame_is_answered_with_its_payload(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            async with raw_ws(server, list(alice.headers.items())) as (ws, hello):
                assert hello["userId"] == alice.user_id
                for payload in (b"are you there?", b"", bytes(range(125))):
                    await ws.send(Ping(payload=payload))
                    while not isinstance(event := await ws.event(), Pong):
                        assert event is not None, "closed before the pong"
                    assert bytes(event.payload) == payload
                assert server.services.broker.statistics().subscribers == 1
            await wait_subscribers(server, 0)


async def test_fragments_are_reassembled(tmp_path: Path) -> None:
    config = stream_config(tmp_path, events={"max_client_frame": 256})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            async with raw_ws(server, list(alice.headers.items())) as (ws, _):
                for part in ('{"type":', '"Ping","data"', ':"in parts"}'):
                    await ws.send(TextMessage(data=part, message_finished=False))
                await ws.send(TextMessage(data="", message_finished=True))
                assert await ws.frame() == {"type": "Pong", "data": "in parts"}
            await wait_subscribers(server, 0)


@pytest.mark.parametrize(
    ("fragments", "finished"),
    [
        (["x" * 100] * 3, False),  # the limit is crossed before the message ends
        (["é" * 50] * 3, True),  # 150 characters but 300 bytes
        (["é" * 200], True),  # one frame, 400 bytes
    ],
    ids=["ascii-unfinished", "utf8-fragments", "utf8-single"],
)
async def test_message_over_max_client_frame_closes_1009(
    tmp_path: Path, fragments: list[str], finished: bool
) -> None:
    config = stream_config(tmp_path, events={"max_client_frame": 256})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            async with raw_ws(server, list(alice.headers.items())) as (ws, _):
                for index, part in enumerate(fragments):
                    if len(fragments) > 1:
                        assert len(part.encode()) < 256  # every frame is small
                    last = finished and index == len(fragments) - 1
                    await ws.send(TextMessage(data=part, message_finished=last))
                assert await ws.close_code() == 1009
                assert await closed_after(ws.stream) < 2.0
            await wait_subscribers(server, 0)


async def test_client_close_is_answered_and_unregisters(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            token = await bearer_token(client, alice)
            async with raw_ws(server, bearer(token)) as (ws, _):
                assert server.services.broker.statistics().subscribers == 1
                await ws.send(CloseConnection(code=1000, reason="bye"))
                assert await ws.close_code() == 1000
                assert await closed_after(ws.stream) < 2.0  # then the server hangs up
            await wait_subscribers(server, 0)


async def test_answered_heartbeats_keep_the_stream_open(tmp_path: Path) -> None:
    """The counterpart of test_stream_e2e's unanswered pings (1011)."""
    config = stream_config(tmp_path, events={"heartbeat_interval": 0.2, "heartbeat_timeout": 0.3})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            async with raw_ws(server, list(alice.headers.items())) as (ws, hello):
                assert hello["heartbeatInterval"] == 0.2
                with trio.move_on_after(1.5):  # over 7 intervals, 5 timeouts
                    while True:
                        event = await ws.event()
                        assert event is not None, "the server hung up"
                        assert not isinstance(event, CloseConnection), event
                assert ws.pings >= 4
                assert server.services.broker.statistics().subscribers == 1
                await ws.send(TextMessage(data='{"type":"Ping","data":1}'))
                assert await ws.frame() == {"type": "Pong", "data": 1}
            await wait_subscribers(server, 0)


# a peer that stops reading


async def small_window_stream(server: trio_events.RunningServer) -> trio.SocketStream:
    """A connection whose receive buffer is small, so the server's writes block soon."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", server.port))
    return trio.SocketStream(sock)


async def test_stalled_reader_is_dropped_and_others_keep_receiving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a stalled write gives up after FRAME_TIMEOUT; shortened so the test is quick
    monkeypatch.setattr("trio_events.transport.websocket.FRAME_TIMEOUT", 0.5)
    config = stream_config(tmp_path, events={"send_queue_size": 2})
    big = "y" * 50_000
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            admin = await admin_actor(client)
            alice, bob = await user_actors(client, server, "alice", "bob")
            room = await create_room(client, admin, "lobby", "Public")
            broker = server.services.broker
            async with (
                await small_window_stream(server) as slow_stream,
                raw_ws(server, list(bob.headers.items())) as (fast, _),
            ):
                slow = await handshake(slow_stream, list(alice.headers.items()))
                await read_hello(slow)  # and nothing more until the end
                posted = 0
                while broker.statistics().subscribers == 2 and broker.statistics().drops == 0:
                    assert posted < 60, "the stalled stream was never dropped"
                    await post_batch(client, admin, room, [big] * 10)  # ~0.5 MB per frame
                    posted += 1
                    last = await latest_event_id(server)
                    assert [t for t, _ in await until(fast, last)] == [CREATED, ROOM_UPDATED]
                await wait_subscribers(server, 1)  # bob's stream only

                code = await slow.close_code()  # what reached alice, then the end
                assert code in (None, 4008), code  # dropped, or closed as slow

                await post(client, admin, room)
                last = await latest_event_id(server)
                assert [t for t, _ in await until(fast, last)] == [CREATED, ROOM_UPDATED]
            await wait_subscribers(server, 0)


# TLS: wss:// and https:// on one port, HTTP/1.1 only


def tls_config(tmp_path: Path) -> tuple[Config, ssl.SSLContext]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    config = stream_config(tmp_path, server={"certfile": str(certfile), "keyfile": str(keyfile)})
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return config, context


async def test_wss_and_https_share_the_port(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_events")
    config, context = tls_config(tmp_path)
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trio_events.open_server(config) as server,
            httpx.AsyncClient(base_url=server.url, verify=context) as client,
        ):
            assert server.url.startswith("https://")
            assert (await client.get("/healthz")).status_code == 200
            admin = await admin_actor(client)
            (alice,) = await user_actors(client, server, "alice")
            room = await create_room(client, admin, "lobby", "Public")
            token = await bearer_token(client, alice)
            url = server.url.replace("https", "wss", 1) + "/api/v1/events"
            headers = [(b"Authorization", f"Bearer {token}".encode())]
            async with open_websocket_url(url, ssl_context=context, extra_headers=headers) as ws:
                hello = parse_hello(await ws.get_message())
                assert hello["userId"] == alice.user_id
                message_id = await post(client, admin, room, "over tls")
                frame = parse(str(await ws.get_message()))
                assert frame["type"] == CREATED
                assert frame["data"]["messages"][0]["messageId"] == message_id
                assert frame["data"]["messages"][0]["text"] == "over tls"
            await wait_subscribers(server, 0)
    opened = [r.getMessage() for r in caplog.records if "stream opened" in r.getMessage()]
    assert len(opened) == 1
    assert f"user={alice.user_id} remote=127.0.0.1:" in opened[0]  # the peer behind TLS


def parse_hello(message: str | bytes) -> Json:
    assert isinstance(message, str)
    frame = json.loads(message)
    assert isinstance(frame, dict)
    assert frame["type"] == "Hello", frame
    data = frame["data"]
    assert isinstance(data, dict)
    return data


async def tls_stream(
    server: trio_events.RunningServer, context: ssl.SSLContext, protocols: list[str]
) -> trio.SSLStream[trio.SocketStream]:
    context.set_alpn_protocols(protocols)
    tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
    return trio.SSLStream(tcp, context, server_hostname="127.0.0.1")


async def test_alpn_offers_only_http_1_1(tmp_path: Path) -> None:
    config, context = tls_config(tmp_path)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio_events.open_server(config) as server:
            async with await tls_stream(server, context, ["h2", "http/1.1"]) as stream:
                await stream.do_handshake()
                assert stream.selected_alpn_protocol() == "http/1.1"
                await stream.send_all(request_head("/healthz"))
                response, _ = await read_response(stream)
                assert response.status == 200

            async with await tls_stream(server, context, ["h2"]) as stream:
                try:
                    await stream.do_handshake()
                except trio.BrokenResourceError:
                    pass  # refusing the handshake is as good as not choosing h2
                else:
                    assert stream.selected_alpn_protocol() is None
