"""``GET /metrics``: Prometheus text, from loopback or for admins."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from trio_events.api import health

from .helpers import (
    ADMIN_NAME,
    ADMIN_PASSWORD,
    TEST_TIMEOUT,
    bearer_headers,
    login,
    make_config,
    serving,
    session_headers,
)
from .rest_helpers import admin_actor, create_room, post, post_batch, user_actors
from .resume_helpers import open_resume, raw
from .stream_helpers import ignore_pings, open_stream, stream_config, wait_routed


def samples(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}"] = sample.value
    return found


async def test_metrics_report_streams_events_requests_and_store(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, client):
            session = await login(client, ADMIN_NAME, ADMIN_PASSWORD)
            headers = session_headers(session)
            room = await server.services.rooms.create(
                None, {"displayName": "R", "roomType": "Public"}
            )
            url = server.url.replace("http", "ws", 1) + "/api/v1/events?since=0"
            cookie = (b"Cookie", f"VirolaUserSessionId={session}".encode())
            async with open_websocket_url(url, extra_headers=[cookie]) as ws:
                await ws.get_message()  # Hello
                response = await client.post(
                    f"/api/v1/rooms/{room['roomId']}/messages",
                    json={"content": "hi"},
                    headers=headers,
                )
                assert response.status_code == 200
                while True:  # until the message event arrived
                    if '"TextMessagesCreated"' in str(await ws.get_message()):
                        break
                response = await client.get("/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain")
                during = samples(response.text)
            assert during["trio_events_open_streams{}"] == 1
            assert during["trio_events_events_committed_total{}"] >= 3
            assert during["trio_events_events_routed_total{}"] >= 3
            assert during["trio_events_resumes_total{outcome=resumed}"] == 1
            assert during["trio_events_stream_queue_depth_gcount{}"] == 1
            route = "method=POST,route=/api/v1/rooms/<int:room_id>/messages,status=200"
            assert during[f"trio_events_http_request_seconds_count{{{route}}}"] == 1
            assert during["trio_events_store_seconds_count{kind=write}"] >= 1
            assert during["trio_events_store_seconds_count{kind=read}"] >= 1

            async def closed() -> dict[str, float]:
                while True:
                    now = samples((await client.get("/metrics")).text)
                    if now["trio_events_open_streams{}"] == 0:
                        return now
                    await trio.sleep(0.02)

            after = await closed()
            assert after["trio_events_stream_closes_total{reason=client_closed}"] == 1


async def test_junk_methods_and_paths_add_no_series(tmp_path: Path) -> None:
    """Labels come from fixed sets: a client cannot make /metrics grow."""

    async def junk(client: httpx.AsyncClient, n: int) -> None:
        for method, path in [
            (f"ZZZ{n}", "/api/v1/rooms"),  # 405
            (f"ZZZ{n}", f"/junk/{n}"),  # 405 of the console's catch-all
            (f"zzz{n}", "/metrics"),
            ("GET", f"/api/v1/junk/{n}"),  # 404
            ("GET", f"/api/v1/rooms/{n}/junk{n}"),
            ("POST", f"/api/v1/nothing-{n}"),
            ("GET", f"/junk/{n}"),  # the catch-all's rule, 404
            ("GET", f"/api/v1/rooms/{n}"),  # 401
        ]:
            assert (await client.request(method, path)).status_code in (401, 404, 405)

    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (_, client):
            await junk(client, 1)
            await client.get("/metrics")  # (its own series appears from the next scrape)
            before = samples((await client.get("/metrics")).text)
            for n in range(2, 102):
                await junk(client, n)
            after = samples((await client.get("/metrics")).text)
    assert set(after) == set(before)
    requests = [name for name in after if name.startswith("trio_events_http_request_seconds_")]
    assert not [name for name in requests if "junk" in name or "ZZZ" in name.upper()]
    counted = "trio_events_http_request_seconds_count{method=%s,route=%s,status=%s}"
    assert after[counted % ("other", "unmatched", "405")] == 101 * 3  # (no rule on a 405)
    assert after[counted % ("GET", "unmatched", "404")] == 101 * 2
    assert after[counted % ("POST", "unmatched", "404")] == 101
    assert after[counted % ("GET", "/<webpath:path>", "404")] == 101
    assert after[counted % ("GET", "/api/v1/rooms/<int:room_id>", "401")] == 101


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return samples(response.text)


async def scraped_until(client: httpx.AsyncClient, name: str, value: float) -> dict[str, float]:
    """Scrape until ``name`` reaches ``value`` (a closing stream is counted as
    its handler ends, a moment after the client saw the close)."""
    while True:
        found = await scrape(client)
        if found.get(name, 0) >= value:
            return found
        await trio.sleep(0.02)


async def test_a_fresh_server_shows_every_outcome_and_reason_at_zero(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (_, client):
            fresh = await scrape(client)
            response = await client.get(
                "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            )
    for outcome in ("resumed", "resync_required"):
        assert fresh[f"trio_events_resumes_total{{outcome={outcome}}}"] == 0
    for reason in (
        "normal",
        "shutdown",
        "rate_limit",
        "frame_too_big",
        "internal_error",
        "session_ended",
        "slow_consumer",
        "heartbeat_timeout",
        "client_closed",
    ):
        assert fresh[f"trio_events_stream_closes_total{{reason={reason}}}"] == 0
    assert fresh["trio_events_heartbeat_timeouts_total{}"] == 0
    assert fresh["trio_events_slow_consumer_closes_total{}"] == 0
    assert fresh["trio_events_stream_queue_depth_gcount{}"] == 0
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert "# TYPE trio_events_stream_queue_depth gaugehistogram" in response.text
    assert response.text.endswith("# EOF\n")


async def test_heartbeat_timeouts_are_counted(tmp_path: Path) -> None:
    config = stream_config(tmp_path, events={"heartbeat_interval": 0.2, "heartbeat_timeout": 0.3})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            pings, code = await ignore_pings(server, list(alice.headers.items()), 5.0)
            assert pings >= 1
            assert code == 1011
            found = await scraped_until(client, "trio_events_heartbeat_timeouts_total{}", 1)
    assert found["trio_events_heartbeat_timeouts_total{}"] == 1
    assert found["trio_events_stream_closes_total{reason=heartbeat_timeout}"] == 1
    assert found["trio_events_stream_closes_total{reason=internal_error}"] == 0


async def test_resumes_are_counted_by_outcome(tmp_path: Path) -> None:
    config = stream_config(tmp_path, events={"max_replay": 2})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            admin = await admin_actor(client)
            (alice,) = await user_actors(client, server, "alice")
            room = await create_room(client, admin, "lobby", "Public")
            headers = list(alice.headers.items())
            mark = await wait_routed(server.services)
            await post(client, admin, room, "one")  # two frames for alice: replayed
            await wait_routed(server.services)
            async with open_resume(server, headers, mark) as stream:
                assert stream.hello["resumed"] is True
            mark = await wait_routed(server.services)
            for text in ("a", "b"):  # four frames: over max_replay
                await post(client, admin, room, text)
            await wait_routed(server.services)
            async with open_resume(server, headers, mark) as stream:
                assert stream.hello["resumed"] is False
                assert (await raw(stream))["type"] == "ResyncRequired"
            async with open_resume(server, headers, mark) as stream:
                assert stream.hello["resumed"] is False
            found = await scrape(client)
    assert found["trio_events_resumes_total{outcome=resumed}"] == 1
    assert found["trio_events_resumes_total{outcome=resync_required}"] == 2


async def test_slow_consumer_closes_are_counted(tmp_path: Path) -> None:
    config = stream_config(tmp_path, events={"send_queue_size": 2})
    big = "y" * 50_000
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            admin = await admin_actor(client)
            (alice,) = await user_actors(client, server, "alice")
            room = await create_room(client, admin, "lobby", "Public")
            broker = server.services.broker
            async with open_stream(server, list(alice.headers.items())) as slow:
                posted = 0
                while broker.statistics().drops == 0:  # alice reads nothing after Hello
                    assert posted < 60, "the slow stream was never closed"
                    await post_batch(client, admin, room, [big] * 10)
                    await wait_routed(server.services)
                    posted += 1
                assert await slow.close_code() == 4008
            found = await scraped_until(
                client, "trio_events_stream_closes_total{reason=slow_consumer}", 1
            )
    assert found["trio_events_slow_consumer_closes_total{}"] == 1
    assert found["trio_events_stream_closes_total{reason=slow_consumer}"] == 1


async def test_metrics_from_elsewhere_need_an_admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests that do not come from loopback must authenticate as an admin."""
    monkeypatch.setattr(health, "_is_loopback", lambda address: False)
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, client):
            assert (await client.get("/metrics")).status_code == 401
            user = await server.services.users.create_user(None, "bob", "bob-password-1")
            token = await server.services.auth.issue_token(user.user_id)
            response = await client.get("/metrics", headers=bearer_headers(token))
            assert response.status_code == 403
            admin_session = await login(client, ADMIN_NAME, ADMIN_PASSWORD)
            response = await client.get("/metrics", headers=session_headers(admin_session))
            assert response.status_code == 200
            assert "trio_events_open_streams" in response.text


def test_loopback_detection() -> None:
    assert health._is_loopback("127.0.0.1")
    assert health._is_loopback("::1")
    assert not health._is_loopback("10.0.0.1")
    assert not health._is_loopback(None)
    assert not health._is_loopback("not an address")
