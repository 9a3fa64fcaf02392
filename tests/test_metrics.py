"""``GET /metrics``: Prometheus text, from loopback or for admins."""

from __future__ import annotations

from pathlib import Path

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
