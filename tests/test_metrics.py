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
            assert during["trio_events_stream_queue_depth_count{}"] == 1
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
