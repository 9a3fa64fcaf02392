"""Authentication through the real server: health, login, sessions, bearer tokens (API.md 1-2)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

import trio_events

from .helpers import (
    ADMIN_NAME,
    ADMIN_PASSWORD,
    SESSION_COOKIE,
    TEST_TIMEOUT,
    USER_PASSWORD,
    assert_error,
    bearer_headers,
    create_user,
    login,
    login_admin,
    make_config,
    serving,
    session_headers,
)

NO_CREDENTIALS = "The Authorization HTTP-header or VirolaUserSessionId cookie expected"
BAD_BEARER = "Wrong Bearer, please renew Web API Access Token"
BAD_LOGIN = "The username or password is invalid."
BAD_SESSION = "The user session has expired or was ended, please log in again"


async def test_healthz_answers_json(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"status": "ok", "httpStatusCode": 200}


async def test_readyz_reports_storage(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["httpStatusCode"] == 200


async def test_login_sets_session_cookie(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.post(
            "/api/v1/login", json={"userName": ADMIN_NAME, "password": ADMIN_PASSWORD}
        )
        admin = await server.services.users.find_user(ADMIN_NAME)
    assert response.status_code == 200
    body = response.json()
    assert body["httpStatusCode"] == 200
    assert body["userId"] == admin.user_id
    session_id = body["userSessionId"]
    assert isinstance(session_id, str)
    assert len(session_id) >= 32

    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 1
    parts = [part.strip() for part in cookies[0].split(";")]
    assert parts[0] == f"{SESSION_COOKIE}={session_id}"
    attributes = {part.split("=", 1)[0].lower(): part for part in parts[1:]}
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=lax"
    assert attributes["path"] == "Path=/"
    assert "secure" not in attributes  # plain HTTP and cookie_secure = false


async def test_status_accepts_cookie_from_jar(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        login_response = await client.post(
            "/api/v1/login", json={"userName": ADMIN_NAME, "password": ADMIN_PASSWORD}
        )
        # The client's cookie jar sends the cookie back, as a browser would.
        response = await client.get("/api/v1/status")
    assert response.status_code == 200
    expected = login_response.json()
    assert response.json() == {
        "userId": expected["userId"],
        "userSessionId": expected["userSessionId"],
        "httpStatusCode": 200,
    }


async def test_wrong_password_is_401(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.post(
            "/api/v1/login", json={"userName": ADMIN_NAME, "password": "not-the-password"}
        )
        unknown = await client.post(
            "/api/v1/login", json={"userName": "nobody", "password": "not-the-password"}
        )
    assert_error(response, 401, BAD_LOGIN)
    assert_error(unknown, 401, BAD_LOGIN)
    assert "set-cookie" not in response.headers


async def test_no_credentials_is_401(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.get("/api/v1/status")
    assert_error(response, 401, NO_CREDENTIALS)


async def test_unknown_session_is_401(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.get("/api/v1/status", headers=session_headers("made-up"))
    assert_error(response, 401)


async def test_bearer_token_authenticates(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        headers = await login_admin(client)
        issued = await client.post("/api/v1/token", headers=headers)
        assert issued.status_code == 200
        token = issued.json()["token"]
        assert isinstance(token, str)
        response = await client.get("/api/v1/status", headers=bearer_headers(token))
        session_status = await client.get("/api/v1/status", headers=headers)
    assert response.status_code == 200
    assert response.json()["userId"] == session_status.json()["userId"]
    assert response.json()["userSessionId"] == token


async def test_new_token_revokes_previous(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        headers = await login_admin(client)
        first = (await client.post("/api/v1/token", headers=headers)).json()["token"]
        second = (await client.post("/api/v1/token", headers=headers)).json()["token"]
        old = await client.get("/api/v1/status", headers=bearer_headers(first))
        new = await client.get("/api/v1/status", headers=bearer_headers(second))
    assert first != second
    assert_error(old, 401, BAD_BEARER)
    assert new.status_code == 200


async def test_token_endpoint_requires_authentication(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.post("/api/v1/token")
    assert_error(response, 401, NO_CREDENTIALS)


async def test_malformed_authorization_header_is_401(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        for value in ("Bearer", "Bearer:x", "Basic YWRtaW46eA==", "garbage", "Bearer nope"):
            response = await client.get("/api/v1/status", headers={"Authorization": value})
            assert_error(response, 401)


async def test_bearer_header_wins_over_cookie(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        headers = await login_admin(client)
        response = await client.get(
            "/api/v1/status", headers={**headers, "Authorization": "Bearer revoked"}
        )
    assert_error(response, 401, BAD_BEARER)


async def test_logout_clears_cookie_and_ends_session(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        session_id = await login(client, ADMIN_NAME, ADMIN_PASSWORD)
        headers = session_headers(session_id)
        response = await client.post("/api/v1/logout", headers=headers)
        after = await client.get("/api/v1/status", headers=headers)
    assert response.status_code == 200
    assert response.json()["httpStatusCode"] == 200
    (cookie,) = response.headers.get_list("set-cookie")
    parts = [part.strip().lower() for part in cookie.split(";")]
    assert parts[0] == f"{SESSION_COOKIE.lower()}="
    assert "max-age=0" in parts
    assert "path=/" in parts
    assert_error(after, 401)


async def test_logout_twice_is_200(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        headers = await login_admin(client)
        first = await client.post("/api/v1/logout", headers=headers)
        second = await client.post("/api/v1/logout", headers=headers)
        anonymous = await client.post("/api/v1/logout")
    assert first.status_code == 200
    assert second.status_code == 200
    assert anonymous.status_code == 200


async def test_logout_keeps_other_sessions(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        first = await login_admin(client)
        second = await login_admin(client)
        await client.post("/api/v1/logout", headers=first)
        response = await client.get("/api/v1/status", headers=second)
    assert response.status_code == 200


async def test_suspended_user_cannot_log_in_and_loses_session(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        user = await create_user(server, "alice")
        alice = session_headers(await login(client, "alice", USER_PASSWORD))
        token = (await client.post("/api/v1/token", headers=alice)).json()["token"]
        admin = await login_admin(client)
        suspend = await client.patch(
            f"/api/v1/users/{user.user_id}", json={"status": "Suspended"}, headers=admin
        )
        assert suspend.status_code == 200, suspend.text
        assert suspend.json()["user"]["status"] == "Suspended"
        old_session = await client.get("/api/v1/status", headers=alice)
        old_token = await client.get("/api/v1/status", headers=bearer_headers(token))
        relogin = await client.post(
            "/api/v1/login", json={"userName": "alice", "password": USER_PASSWORD}
        )
    assert_error(old_session, 401)
    assert_error(old_token, 401, BAD_BEARER)
    assert_error(relogin, 401)
    assert "set-cookie" not in relogin.headers


async def test_login_rate_limit(tmp_path: Path) -> None:
    config = make_config(tmp_path, auth={"login_rate": 3, "login_window": 60.0})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (_, client):
            wrong = {"userName": ADMIN_NAME, "password": "wrong-password"}
            for _ in range(3):
                assert_error(await client.post("/api/v1/login", json=wrong), 401, BAD_LOGIN)
            limited = await client.post("/api/v1/login", json=wrong)
            # Even the right password is refused while the window lasts.
            right = await client.post(
                "/api/v1/login", json={"userName": ADMIN_NAME, "password": ADMIN_PASSWORD}
            )
            # Another user name from the same address has its own budget.
            other = await client.post(
                "/api/v1/login", json={"userName": "someone", "password": "wrong-password"}
            )
    assert_error(limited, 429)
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 61
    assert_error(right, 429)
    assert_error(other, 401, BAD_LOGIN)


async def test_successful_login_resets_failures(tmp_path: Path) -> None:
    config = make_config(tmp_path, auth={"login_rate": 2})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (_, client):
            wrong = {"userName": ADMIN_NAME, "password": "wrong-password"}
            right = {"userName": ADMIN_NAME, "password": ADMIN_PASSWORD}
            assert_error(await client.post("/api/v1/login", json=wrong), 401)
            assert (await client.post("/api/v1/login", json=right)).status_code == 200
            assert_error(await client.post("/api/v1/login", json=wrong), 401)
            response = await client.post("/api/v1/login", json=right)
    assert response.status_code == 200


async def test_cookie_secure_when_configured(tmp_path: Path) -> None:
    config = make_config(tmp_path, auth={"cookie_secure": True})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (_, client):
            response = await client.post(
                "/api/v1/login", json={"userName": ADMIN_NAME, "password": ADMIN_PASSWORD}
            )
    (cookie,) = response.headers.get_list("set-cookie")
    assert "secure" in [part.strip().lower() for part in cookie.split(";")]


async def test_one_address_spraying_user_names_is_limited(tmp_path: Path) -> None:
    """Per address, the budget is ADDRESS_FACTOR times the per-name one (README)."""
    from trio_events.services.auth import ADDRESS_FACTOR

    rate = 1
    config = make_config(tmp_path, auth={"login_rate": rate, "login_window": 60.0})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (_, client):
            for n in range(rate * ADDRESS_FACTOR):  # each name stays within its own budget
                wrong = {"userName": f"guess{n}", "password": "wrong-password"}
                assert_error(await client.post("/api/v1/login", json=wrong), 401, BAD_LOGIN)
            fresh = await client.post(
                "/api/v1/login", json={"userName": "fresh-name", "password": "wrong-password"}
            )
    assert_error(fresh, 429)


async def test_session_expires_after_its_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock the server reads is moved past the TTL: no real waiting."""
    from trio_events.model import now_ms

    moved = 0
    monkeypatch.setattr("trio_events.services.auth.now_ms", lambda: now_ms() + moved)
    config = make_config(tmp_path, auth={"session_ttl": 60.0})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (_, client):
            response = await client.post(
                "/api/v1/login", json={"userName": ADMIN_NAME, "password": ADMIN_PASSWORD}
            )
            session_id = response.json()["userSessionId"]
            (cookie,) = response.headers.get_list("set-cookie")
            moved = 59_000
            fresh = await client.get("/api/v1/status", headers=session_headers(session_id))
            moved = 60_001
            expired = await client.get("/api/v1/status", headers=session_headers(session_id))
    assert "max-age=60" in [part.strip().lower() for part in cookie.split(";")]
    assert fresh.status_code == 200
    assert_error(expired, 401, BAD_SESSION)
