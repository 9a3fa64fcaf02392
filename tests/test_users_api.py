"""The users API through the real server: listing, creating, patching, avatars (API.md 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import trio_events
import trio_events.services.users

from .attachment_helpers import GIF, PNG, WEBP, WRONG_IMAGE_TYPES
from .helpers import (
    ADMIN_NAME,
    ADMIN_PASSWORD,
    TEST_TIMEOUT,
    USER_PASSWORD,
    assert_error,
    bearer_headers,
    login,
    login_admin,
    login_user,
    make_config,
    serving,
    session_headers,
)

USER_FIELDS = {
    "userId",
    "userName",
    "displayName",
    "isAdmin",
    "status",
    "createdUtc",
    "lastModifiedUtc",
}


async def test_list_users_has_exactly_the_contract_fields(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        _, headers = await login_user(client, server, "alice")
        response = await client.get("/api/v1/users", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["httpStatusCode"] == 200
    users = body["users"]
    assert [user["userName"] for user in users] == [ADMIN_NAME, "alice"]
    for user in users:
        assert set(user) == USER_FIELDS
        assert isinstance(user["userId"], int)
        assert user["userId"] > 0
        assert isinstance(user["createdUtc"], int)
        assert isinstance(user["lastModifiedUtc"], int)
        assert user["status"] == "Active"
    assert users[0]["isAdmin"] is True
    assert users[1]["isAdmin"] is False
    assert users[1]["displayName"] == "alice"


async def test_list_users_requires_authentication(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.get("/api/v1/users")
    assert_error(response, 401)


async def test_admin_creates_user(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin = await login_admin(client)
        created = await client.post(
            "/api/v1/users",
            json={"userName": "bob", "password": "bob-password", "displayName": "Bob B."},
            headers=admin,
        )
        assert created.status_code == 200, created.text
        session_id = await login(client, "bob", "bob-password")
    body = created.json()
    assert body["httpStatusCode"] == 200
    assert body["userId"] == body["user"]["userId"]
    assert set(body["user"]) == USER_FIELDS
    assert body["user"]["displayName"] == "Bob B."
    assert body["user"]["isAdmin"] is False
    assert session_id


async def test_create_user_errors(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin = await login_admin(client)

        async def create(body: object) -> httpx.Response:
            return await client.post("/api/v1/users", json=body, headers=admin)

        assert (await create({"userName": "carol", "password": USER_PASSWORD})).status_code == 200
        assert_error(await create({"userName": "carol", "password": USER_PASSWORD}), 409)
        # User names are case-insensitive.
        assert_error(await create({"userName": "CAROL", "password": USER_PASSWORD}), 409)
        assert_error(await create({"userName": "bad name", "password": USER_PASSWORD}), 400)
        assert_error(await create({"userName": "", "password": USER_PASSWORD}), 400)
        assert_error(await create({"userName": "x" * 101, "password": USER_PASSWORD}), 400)
        assert_error(await create({"userName": "dave", "password": "short"}), 400)
        assert_error(await create({"userName": "dave"}), 400)
        assert_error(await create({"userName": 5, "password": USER_PASSWORD}), 400)
        assert_error(
            await create({"userName": "dave", "password": USER_PASSWORD, "isAdmin": "yes"}), 400
        )
        assert_error(
            await create({"userName": "dave", "password": USER_PASSWORD, "role": "x"}), 400
        )
        listed = await client.get("/api/v1/users", headers=admin)
    assert [user["userName"] for user in listed.json()["users"]] == [ADMIN_NAME, "carol"]


async def test_non_admin_cannot_create_users(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        _, headers = await login_user(client, server, "alice")
        response = await client.post(
            "/api/v1/users", json={"userName": "eve", "password": USER_PASSWORD}, headers=headers
        )
        users = await server.services.users.list_users()
    assert_error(response, 403)
    assert [user.user_name for user in users] == [ADMIN_NAME, "alice"]


async def test_user_changes_own_display_name(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        user, headers = await login_user(client, server, "alice")
        response = await client.patch(
            f"/api/v1/users/{user.user_id}", json={"displayName": "  Alice A.  "}, headers=headers
        )
    assert response.status_code == 200, response.text
    changed = response.json()["user"]
    assert changed["displayName"] == "Alice A."
    assert changed["lastModifiedUtc"] >= user.last_modified_utc


async def test_user_changes_own_password(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        user, headers = await login_user(client, server, "alice")
        url = f"/api/v1/users/{user.user_id}"
        new = "new-password-2"
        without = await client.patch(url, json={"password": new}, headers=headers)
        wrong = await client.patch(
            url, json={"password": new, "currentPassword": "not-it-at-all"}, headers=headers
        )
        assert_error(without, 400)
        assert_error(wrong, 403)
        right = await client.patch(
            url, json={"password": new, "currentPassword": USER_PASSWORD}, headers=headers
        )
        assert right.status_code == 200, right.text
        # The session that changed the password stays valid.
        still = await client.get("/api/v1/status", headers=headers)
        old = await client.post(
            "/api/v1/login", json={"userName": "alice", "password": USER_PASSWORD}
        )
        fresh = await client.post("/api/v1/login", json={"userName": "alice", "password": new})
    assert still.status_code == 200
    assert_error(old, 401, "The username or password is invalid.")
    assert fresh.status_code == 200


async def test_non_admin_limits(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        alice, headers = await login_user(client, server, "alice")
        bob, _ = await login_user(client, server, "bob")
        own = f"/api/v1/users/{alice.user_id}"
        promote = await client.patch(own, json={"isAdmin": True}, headers=headers)
        unsuspend = await client.patch(own, json={"status": "Active"}, headers=headers)
        other = await client.patch(
            f"/api/v1/users/{bob.user_id}", json={"displayName": "Bobby"}, headers=headers
        )
        after = await server.services.users.find_user("bob")
    assert_error(promote, 403)
    assert_error(unsuspend, 403)
    assert_error(other, 403)
    assert after.display_name == "bob"


async def test_patch_errors(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin = await login_admin(client)
        missing = await client.patch(
            "/api/v1/users/9999", json={"displayName": "Ghost"}, headers=admin
        )
        empty = await client.patch("/api/v1/users/1", json={}, headers=admin)
        bad_status = await client.patch("/api/v1/users/1", json={"status": "Gone"}, headers=admin)
    assert_error(missing, 404)
    assert_error(empty, 400)
    assert_error(bad_status, 400)


async def test_last_active_admin_cannot_be_demoted(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin = await login_admin(client)
        me = (await client.get("/api/v1/status", headers=admin)).json()["userId"]
        demote = await client.patch(f"/api/v1/users/{me}", json={"isAdmin": False}, headers=admin)
        suspend = await client.patch(
            f"/api/v1/users/{me}", json={"status": "Suspended"}, headers=admin
        )
        # With a second administrator the first one may step down.
        await login_user(client, server, "deputy", is_admin=True)
        allowed = await client.patch(f"/api/v1/users/{me}", json={"isAdmin": False}, headers=admin)
    assert_error(demote, 409)
    assert_error(suspend, 409)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["user"]["isAdmin"] is False


async def test_avatar_round_trip(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        user, headers = await login_user(client, server, "alice")
        url = f"/api/v1/users/{user.user_id}/avatar.jpg"
        put = await client.put(url, content=PNG, headers=headers)
        assert put.status_code == 200, put.text
        response = await client.get(url, headers=headers)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(PNG))
    assert "avatar.png" in response.headers["content-disposition"]


async def test_admin_sets_another_users_avatar(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        user, headers = await login_user(client, server, "alice")
        admin = await login_admin(client)
        url = f"/api/v1/users/{user.user_id}/avatar.jpg"
        put = await client.put(url, content=GIF, headers=admin)
        response = await client.get(url, headers=headers)
    assert put.status_code == 200, put.text
    assert response.headers["content-type"] == "image/gif"


async def test_avatar_errors(client: httpx.AsyncClient, server: trio_events.RunningServer) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        alice, headers = await login_user(client, server, "alice")
        bob, _ = await login_user(client, server, "bob")
        own = f"/api/v1/users/{alice.user_id}/avatar.jpg"
        none_yet = await client.get(own, headers=headers)
        not_image = await client.put(own, content=b"just some text", headers=headers)
        empty = await client.put(own, content=b"", headers=headers)
        others = await client.put(
            f"/api/v1/users/{bob.user_id}/avatar.jpg", content=PNG, headers=headers
        )
        anonymous = await client.get(own)
        still_none = await client.get(own, headers=headers)
    assert_error(none_yet, 404)
    assert_error(not_image, 415)
    assert_error(empty, 400)
    assert_error(others, 403)
    assert_error(anonymous, 401)
    assert_error(still_none, 404)


async def listed_user(
    client: httpx.AsyncClient, headers: dict[str, str], user_id: int
) -> dict[str, Any]:
    response = await client.get("/api/v1/users", headers=headers)
    assert response.status_code == 200, response.text
    (found,) = [u for u in response.json()["users"] if u["userId"] == user_id]
    assert isinstance(found, dict)
    return found


async def test_avatar_changes_show_in_the_user_list(
    monkeypatch: pytest.MonkeyPatch, client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    """A User has no avatar field: lastModifiedUtc is how a client learns to
    fetch the picture again, on the first avatar and on each replacement."""
    with trio.fail_after(TEST_TIMEOUT):
        user, headers = await login_user(client, server, "alice")
        url = f"/api/v1/users/{user.user_id}/avatar.jpg"
        created = await listed_user(client, headers, user.user_id)
        first = created["lastModifiedUtc"] + 60_000
        monkeypatch.setattr(trio_events.services.users, "now_ms", lambda: first)
        assert (await client.put(url, content=PNG, headers=headers)).status_code == 200
        with_avatar = await listed_user(client, headers, user.user_id)
        second = first + 60_000
        monkeypatch.setattr(trio_events.services.users, "now_ms", lambda: second)
        assert (await client.put(url, content=WEBP, headers=headers)).status_code == 200
        replaced = await listed_user(client, headers, user.user_id)
        served = await client.get(url, headers=headers)
    assert with_avatar == {**created, "lastModifiedUtc": first}
    assert replaced == {**created, "lastModifiedUtc": second}
    assert served.content == WEBP
    assert served.headers["content-type"] == "image/webp"
    assert "avatar.webp" in served.headers["content-disposition"]


@pytest.mark.parametrize("case", sorted(WRONG_IMAGE_TYPES))
async def test_wrong_avatar_content_is_415_and_changes_nothing(
    client: httpx.AsyncClient, server: trio_events.RunningServer, case: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        user, headers = await login_user(client, server, "alice")
        url = f"/api/v1/users/{user.user_id}/avatar.jpg"
        assert (await client.put(url, content=GIF, headers=headers)).status_code == 200
        before = await listed_user(client, headers, user.user_id)
        response = await client.put(
            url, content=WRONG_IMAGE_TYPES[case], headers={**headers, "Content-Type": "image/png"}
        )
        kept = await client.get(url, headers=headers)
        after = await listed_user(client, headers, user.user_id)
    assert_error(response, 415)
    assert kept.content == GIF
    assert after == before


async def test_a_truncated_avatar_is_400_and_changes_nothing(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    """``GIF89a`` and four bytes passed the old magic-number check."""
    with trio.fail_after(TEST_TIMEOUT):
        user, headers = await login_user(client, server, "alice")
        url = f"/api/v1/users/{user.user_id}/avatar.jpg"
        assert (await client.put(url, content=PNG, headers=headers)).status_code == 200
        before = await listed_user(client, headers, user.user_id)
        response = await client.put(url, content=b"GIF89a....", headers=headers)
        kept = await client.get(url, headers=headers)
        after = await listed_user(client, headers, user.user_id)
    assert_error(
        response,
        400,
        "The GIF image is truncated or damaged: it ends inside the logical screen descriptor",
    )
    assert kept.content == PNG
    assert after == before


async def test_avatar_too_big(tmp_path: Path) -> None:
    config = make_config(tmp_path, limits={"max_avatar_bytes": 100})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (_, client):
            session_id = await login(client, ADMIN_NAME, ADMIN_PASSWORD)
            headers = session_headers(session_id)
            url = "/api/v1/users/1/avatar.jpg"
            response = await client.put(url, content=PNG + bytes(200), headers=headers)
            fits = await client.put(url, content=PNG, headers=headers)
    assert_error(response, 413)
    assert fits.status_code == 200, fits.text


async def test_own_password_change_ends_other_sessions_and_token(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        user, first = await login_user(client, server, "alice")
        second = session_headers(await login(client, "alice", USER_PASSWORD))
        token = (await client.post("/api/v1/token", headers=first)).json()["token"]
        changed = await client.patch(
            f"/api/v1/users/{user.user_id}",
            json={"password": "new-password-2", "currentPassword": USER_PASSWORD},
            headers=first,
        )
        assert changed.status_code == 200, changed.text
        kept = await client.get("/api/v1/status", headers=first)
        other = await client.get("/api/v1/status", headers=second)
        bearer = await client.get("/api/v1/status", headers=bearer_headers(token))
    assert kept.status_code == 200
    assert_error(other, 401)
    assert_error(bearer, 401)


async def test_admin_password_reset_ends_every_session(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        user, headers = await login_user(client, server, "alice")
        admin = await login_admin(client)
        reset = await client.patch(
            f"/api/v1/users/{user.user_id}", json={"password": "reset-password"}, headers=admin
        )
        assert reset.status_code == 200, reset.text
        old = await client.get("/api/v1/status", headers=headers)
        admin_still = await client.get("/api/v1/status", headers=admin)
        fresh = await client.post(
            "/api/v1/login", json={"userName": "alice", "password": "reset-password"}
        )
    assert_error(old, 401)
    assert admin_still.status_code == 200
    assert fresh.status_code == 200


async def test_login_user_name_is_case_insensitive(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        user, _ = await login_user(client, server, "Alice")
        response = await client.post(
            "/api/v1/login", json={"userName": "ALICE", "password": USER_PASSWORD}
        )
    assert response.status_code == 200
    assert response.json()["userId"] == user.user_id
