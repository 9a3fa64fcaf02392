"""The listener under hostile or lazy clients: every connection is bounded in time and size.

Each test runs an in-process server with short limits and talks raw TCP, so
the moment a socket closes and the exact bytes of an answer are visible.
``header_timeout`` and ``max_header_bytes`` are enforced by our dispatcher
(:func:`trio_events.transport.http.serve_http`) for a connection's first
request head; ``keep_alive_timeout``, ``keep_alive_max_requests`` and
``request_timeout`` by hypercorn, so for those only the externally visible
behaviour is asserted.  After every test no subscriber is left and
``/healthz`` still answers.  (A client frame over ``max_client_frame`` closing
with 1009 is covered by ``test_stream_e2e.py``.)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest
import trio

import trio_events

from .helpers import make_config, serving
from .rest_helpers import admin_actor, create_room, user_actors
from .stream_helpers import bearer
from .transport_helpers import (
    EVENTS,
    assert_json_error,
    bearer_token,
    closed_after,
    connect,
    parse_response,
    read_response,
    request_head,
    upgrade_headers,
)

TIMEOUT = 20.0
HEADER_TIMEOUT = 1.0
MARGIN = 0.75  # scheduling slack on a loaded machine
TRICKLE = 0.2  # seconds between two bytes of a slow-loris head
MAX_HEAD = 2048


async def closed_within(stream: trio.abc.Stream, limit: float) -> float:
    """Seconds until the server closes ``stream``; ``limit`` plus one if it has not by then."""
    with trio.move_on_after(limit + 1.0):
        return await closed_after(stream)
    return limit + 1.0


async def still_serving(server: trio_events.RunningServer, client: httpx.AsyncClient) -> None:
    assert server.services.broker.statistics().subscribers == 0
    response = await client.get("/healthz")
    assert response.status_code == 200, response.text


async def trickle(stream: trio.abc.Stream, data: bytes, gap: float) -> None:
    """Send ``data`` one byte at a time, ``gap`` seconds apart, until the server hangs up."""
    for byte in data:
        try:
            await stream.send_all(bytes([byte]))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        await trio.sleep(gap)


async def healthz_meanwhile(client: httpx.AsyncClient, results: list[float], count: int) -> None:
    """Ask ``/healthz`` ``count`` times, recording each answer's latency."""
    for _ in range(count):
        started = trio.current_time()
        response = await client.get("/healthz")
        assert response.status_code == 200
        results.append(trio.current_time() - started)
        await trio.sleep(0.05)


# the first request head: header_timeout, enforced by the dispatcher


@pytest.mark.parametrize("target", ["/healthz", EVENTS])
async def test_slow_loris_head_is_cut_at_header_timeout(tmp_path: Path, target: str) -> None:
    config = make_config(tmp_path, server={"header_timeout": HEADER_TIMEOUT})
    with trio.fail_after(TIMEOUT):
        async with serving(config) as (server, client):
            headers = upgrade_headers() if target == EVENTS else []
            slow_head = request_head(target, headers)
            assert len(slow_head) * TRICKLE > 3 * HEADER_TIMEOUT  # it could never finish
            latencies: list[float] = []
            async with await connect(server) as stream, trio.open_nursery() as nursery:
                started = trio.current_time()
                nursery.start_soon(trickle, stream, slow_head, TRICKLE)
                nursery.start_soon(healthz_meanwhile, client, latencies, 10)
                await closed_within(stream, HEADER_TIMEOUT + MARGIN)
                elapsed = trio.current_time() - started
                nursery.cancel_scope.cancel()
            assert HEADER_TIMEOUT - 0.1 <= elapsed < HEADER_TIMEOUT + MARGIN, elapsed
            assert len(latencies) >= 5, latencies  # others were served meanwhile
            assert max(latencies) < 0.5, latencies
            await still_serving(server, client)


async def test_partial_upgrade_head_is_cut_at_header_timeout(tmp_path: Path) -> None:
    """A valid, authenticated upgrade that never sends its blank line gets no stream."""
    config = make_config(tmp_path, server={"header_timeout": HEADER_TIMEOUT})
    with trio.fail_after(TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            token = await bearer_token(client, alice)
            full = request_head(EVENTS, upgrade_headers(*bearer(token)))
            async with await connect(server) as stream:
                started = trio.current_time()
                await stream.send_all(full[:-2])  # everything but the final CRLF
                await closed_within(stream, HEADER_TIMEOUT + MARGIN)
                elapsed = trio.current_time() - started
            assert HEADER_TIMEOUT - 0.1 <= elapsed < HEADER_TIMEOUT + MARGIN, elapsed
            await still_serving(server, client)


# later request heads and idle connections: keep_alive_timeout (hypercorn)


async def test_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    keep_alive = 0.5
    config = make_config(tmp_path, server={"keep_alive_timeout": keep_alive})
    with trio.fail_after(TIMEOUT):
        async with serving(config) as (server, client):
            async with await connect(server) as stream:
                await stream.send_all(request_head("/healthz"))
                response, rest = await read_response(stream)
                assert response.status == 200
                assert response.headers.get("connection", "").lower() != "close"
                assert rest == b""
                elapsed = await closed_within(stream, keep_alive + MARGIN)
            assert keep_alive - 0.1 <= elapsed < keep_alive + MARGIN, (
                f"an idle keep-alive connection was still open {elapsed:.2f}s after its"
                f" response (keep_alive_timeout={keep_alive})"
            )
            await still_serving(server, client)


async def test_slow_loris_second_head_is_cut_by_keep_alive_timeout(tmp_path: Path) -> None:
    """After a first request, the next head may not trickle in for longer than
    the larger of the two head limits."""
    keep_alive = 0.5
    config = make_config(
        tmp_path, server={"keep_alive_timeout": keep_alive, "header_timeout": HEADER_TIMEOUT}
    )
    with trio.fail_after(TIMEOUT):
        async with serving(config) as (server, client):
            async with await connect(server) as stream, trio.open_nursery() as nursery:
                await stream.send_all(request_head("/healthz"))
                response, _ = await read_response(stream)
                assert response.status == 200
                started = trio.current_time()
                nursery.start_soon(trickle, stream, request_head("/healthz"), TRICKLE)
                limit = max(keep_alive, HEADER_TIMEOUT) + MARGIN
                await closed_within(stream, limit)
                elapsed = trio.current_time() - started
                nursery.cancel_scope.cancel()
            assert elapsed < limit, (
                f"a second request head trickling one byte per {TRICKLE}s was still being"
                f" read after {elapsed:.2f}s (keep_alive_timeout={keep_alive},"
                f" header_timeout={HEADER_TIMEOUT})"
            )
            await still_serving(server, client)


# keep_alive_max_requests (hypercorn)


@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
async def test_keep_alive_max_requests_closes_the_connection(
    tmp_path: Path, pipelined: bool
) -> None:
    limit = 3
    config = make_config(tmp_path, server={"keep_alive_max_requests": limit})
    one = request_head("/healthz")
    with trio.fail_after(TIMEOUT):
        async with serving(config) as (server, client):
            async with await connect(server) as stream:
                responses = []
                rest = b""
                if pipelined:
                    await stream.send_all(one * (limit + 1))
                for _ in range(limit):
                    if not pipelined:
                        await stream.send_all(one)
                    response, rest = await read_response(stream, rest)
                    responses.append(response)
                if not pipelined:
                    with contextlib.suppress(trio.BrokenResourceError):
                        await stream.send_all(one)  # the fourth: must go unanswered
                after = rest
                closed = False
                with trio.move_on_after(3.0):
                    try:
                        while chunk := await stream.receive_some():
                            after += chunk
                    except trio.BrokenResourceError:
                        pass
                    closed = True
            assert [r.status for r in responses] == [200] * limit
            connection = [r.headers.get("connection", "").lower() for r in responses]
            assert "close" not in connection[:-1], connection
            assert connection[-1] == "close", connection
            assert closed, "the connection stayed open after keep_alive_max_requests"
            assert after == b"", after[:200]  # no answer to a request past the limit
            await still_serving(server, client)


# max_header_bytes: refused by the dispatcher (first head) or h11 (later heads)


async def status_of(stream: trio.abc.Stream) -> int:
    """The status code of the next response head on ``stream`` (its body is left unread)."""
    data = b""
    while b"\r\n" not in data:
        chunk = await stream.receive_some()
        assert chunk, f"closed before a status line: {data!r}"
        data += chunk
    return int(data.split(b" ", 2)[1])


async def send_head_and_collect(
    stream: trio.abc.Stream, head: bytes, pieces: int
) -> tuple[bytes, bool]:
    """Send ``head`` in ``pieces`` writes; everything the server answers within
    3 s, and whether it closed the connection by then."""
    size = -(-len(head) // pieces)
    data = b""
    closed = False
    try:
        for start in range(0, len(head), size):
            await stream.send_all(head[start : start + size])
            await trio.sleep(0.01 if pieces > 1 else 0)
        with trio.move_on_after(3.0):
            while chunk := await stream.receive_some():
                data += chunk
            closed = True
    except trio.BrokenResourceError:
        closed = True  # a reset: what was answered before it is in ``data``
    return data, closed


def assert_refused_as_too_large(data: bytes, closed: bool, size: int) -> None:
    """``data`` is a JSON 431; the connection closed if and only if the answer said so."""
    assert data, f"a {size}-byte head got no answer"
    response = parse_response(data)
    text = assert_json_error(response, 431)
    assert str(MAX_HEAD) in text, text
    assert closed == (response.headers.get("connection", "").lower() == "close"), (
        response.headers,
        closed,
    )


@pytest.mark.parametrize("pieces", [1, 8], ids=["one-write", "eight-writes"])
@pytest.mark.parametrize("target", ["/healthz", EVENTS])
async def test_head_over_max_header_bytes_is_refused(
    tmp_path: Path, target: str, pieces: int
) -> None:
    config = make_config(tmp_path, server={"max_header_bytes": MAX_HEAD})
    with trio.fail_after(TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            token = await bearer_token(client, alice)
            headers = upgrade_headers(*bearer(token)) if target == EVENTS else []
            under = request_head(target, [*headers, ("X-Padding", "a" * 1000)])
            over = request_head(target, [*headers, ("X-Padding", "a" * 5000)])
            assert len(under) < MAX_HEAD < 2 * MAX_HEAD < len(over)

            async with await connect(server) as stream:  # the control: accepted
                await stream.send_all(under)
                assert await status_of(stream) == (101 if target == EVENTS else 200)

            async with await connect(server) as stream:
                data, closed = await send_head_and_collect(stream, over, pieces)
            assert_refused_as_too_large(data, closed, len(over))
            assert closed  # the first head is refused by the dispatcher, which closes
            await still_serving(server, client)


# request_timeout: the body (hypercorn's read timeout)


@pytest.mark.parametrize("gap", [1.6, 0.25], ids=["silent-gap", "steady-trickle"])
async def test_trickling_body_gets_408_or_is_closed(tmp_path: Path, gap: float) -> None:
    """``request_timeout`` is "seconds a request body (or any read) may take to
    arrive": a body whose bytes come ``gap`` apart, taking far longer than that
    in total, is cut within the timeout plus a margin."""
    request_timeout = 1.0
    config = make_config(tmp_path, server={"request_timeout": request_timeout})
    body = b'{"content": "' + b"x" * 40 + b'"}'
    with trio.fail_after(TIMEOUT):
        async with serving(config) as (server, client):
            admin = await admin_actor(client)
            room = await create_room(client, admin, "lobby", "Public")
            token = await bearer_token(client, admin)
            head = request_head(
                f"/api/v1/rooms/{room}/messages",
                [
                    *bearer(token),
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                ],
                method="POST",
            )
            assert len(body) * gap > 5 * request_timeout
            limit = request_timeout + gap + MARGIN
            answer = b""
            async with await connect(server) as stream, trio.open_nursery() as nursery:
                await stream.send_all(head)
                started = trio.current_time()
                nursery.start_soon(trickle, stream, body, gap)
                try:
                    with trio.move_on_after(limit + 1.0):
                        # the first answer bytes or the close, whichever comes first
                        answer = await stream.receive_some()
                except trio.BrokenResourceError:
                    pass
                elapsed = trio.current_time() - started
                nursery.cancel_scope.cancel()
            if answer:
                assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert elapsed < limit, (
                f"a body trickling {gap}s per byte was still being read after {elapsed:.2f}s"
                f" (request_timeout={request_timeout}); answer={answer[:80]!r}"
            )
            await still_serving(server, client)


@pytest.mark.parametrize("pieces", [1, 8], ids=["one-write", "eight-writes"])
async def test_second_head_over_max_header_bytes_is_refused(tmp_path: Path, pieces: int) -> None:
    """A later head on a keep-alive connection is parsed by h11 (which refuses a
    head that arrives in pieces and closes) and then checked by the app (which
    refuses a head that arrived whole): the same limit and answer either way."""
    config = make_config(tmp_path, server={"max_header_bytes": MAX_HEAD})
    over = request_head("/healthz", [("X-Padding", "a" * 5000)])
    with trio.fail_after(TIMEOUT):
        async with serving(config) as (server, client):
            async with await connect(server) as stream:
                await stream.send_all(request_head("/healthz"))
                first, rest = await read_response(stream)
                assert first.status == 200
                assert rest == b""
                data, closed = await send_head_and_collect(stream, over, pieces)
            assert_refused_as_too_large(data, closed, len(over))
            await still_serving(server, client)


async def test_shutdown_cuts_an_unfinished_request_after_graceful_timeout(
    tmp_path: Path,
) -> None:
    """A request still waiting for its body does not hold shutdown past
    ``server.graceful_timeout`` (its body timeout would be far longer)."""
    graceful = 0.5
    config = make_config(tmp_path, server={"graceful_timeout": graceful, "request_timeout": 60.0})
    with trio.fail_after(TIMEOUT):
        async with serving(config) as (server, client):
            admin = await admin_actor(client)
            room = await create_room(client, admin, "lobby", "Public")
            token = await bearer_token(client, admin)
            head = request_head(
                f"/api/v1/rooms/{room}/messages",
                [
                    *bearer(token),
                    ("Content-Type", "application/json"),
                    ("Content-Length", "1000"),
                ],
                method="POST",
            )
            stream = await connect(server)
            await stream.send_all(head + b'{"content": "')  # and then nothing more
            await trio.sleep(0.2)  # the handler is now waiting for the body
            started = trio.current_time()
        elapsed = trio.current_time() - started  # leaving `serving` shut the server down
        await stream.aclose()
    assert elapsed < graceful + MARGIN + 1.0, f"shutdown took {elapsed:.2f}s"
