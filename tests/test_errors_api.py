"""Every error path answers JSON with errorText and httpStatusCode == status (API.md 1)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import trio_events
from trio_events.api import create_app
from trio_events.services.validate import MAX_ID

from .helpers import (
    ADMIN_NAME,
    ADMIN_PASSWORD,
    TEST_TIMEOUT,
    assert_error,
    login_admin,
    make_config,
    serving,
)
from .rest_helpers import (
    Actor,
    admin_actor,
    body_of,
    comment,
    create_room,
    post,
    snapshot,
    user_actors,
)

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "path", ["/nope", "/api/v1/nope", "/api/v1/users/abc", "/api/v1/users/1/avatar.png"]
)
async def test_unknown_route_is_404(client: httpx.AsyncClient, path: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.get(path)
    assert_error(response, 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/login"),
        ("DELETE", "/api/v1/status"),
        ("POST", "/healthz"),
        ("PUT", "/api/v1/users"),
    ],
)
async def test_wrong_method_is_405(client: httpx.AsyncClient, method: str, path: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.request(method, path)
    assert_error(response, 405)
    assert "allow" in response.headers


@pytest.mark.parametrize(
    "body",
    [b"{", b"{'userName': 1}", b"\xff\xfe", b"not json", b""],
)
async def test_malformed_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.post("/api/v1/login", content=body, headers=JSON)
    assert_error(response, 400)


@pytest.mark.parametrize("body", [b"[]", b"[1, 2]", b'"text"', b"42", b"null", b"true"])
async def test_json_that_is_not_an_object_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.post("/api/v1/login", content=body, headers=JSON)
        admin = await login_admin(client)
        create = await client.post("/api/v1/users", content=body, headers={**JSON, **admin})
    assert_error(response, 400)
    assert_error(create, 400)


async def test_unknown_field_is_400(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin = await login_admin(client)
        create = await client.post(
            "/api/v1/users",
            json={"userName": "bob", "password": "bob-password", "favouriteColour": "red"},
            headers=admin,
        )
        patch = await client.patch("/api/v1/users/1", json={"nickname": "x"}, headers=admin)
    assert "favouriteColour" in assert_error(create, 400)["errorText"]
    assert "nickname" in assert_error(patch, 400)["errorText"]


async def test_wrong_field_type_is_400(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin = await login_admin(client)
        response = await client.patch("/api/v1/users/1", json={"displayName": 7}, headers=admin)
    assert_error(response, 400)


async def test_oversized_body_is_413(tmp_path: Path) -> None:
    config = make_config(tmp_path, limits={"max_request_bytes": 2048, "max_avatar_bytes": 2048})
    big = {"userName": ADMIN_NAME, "password": ADMIN_PASSWORD, "pad": "x" * 4096}
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (_, client):
            declared = await client.post("/api/v1/login", json=big)

            async def chunks() -> AsyncIterator[bytes]:
                # No Content-Length: the body is streamed in chunks.
                for _ in range(8):
                    yield b" " * 512

            streamed = await client.post("/api/v1/login", content=chunks(), headers=JSON)
            small = await client.post(
                "/api/v1/login", json={"userName": ADMIN_NAME, "password": ADMIN_PASSWORD}
            )
    assert_error(declared, 413)
    assert_error(streamed, 413)
    assert small.status_code == 200


async def test_errors_do_not_leak_internals(client: httpx.AsyncClient) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        response = await client.post("/api/v1/login", content=b"{", headers=JSON)
    assert "Traceback" not in response.text
    assert "File " not in response.text


# Ids: every <int:...> of the URL map, and every id in a body, is 1 to MAX_ID.

OUT_OF_RANGE_IDS = ["0", "-1", str(MAX_ID + 1), str(2**63), str(10**30), "9" * 5000, "\u0661"]
CLOSE = {"Connection": "close"}  # each request on a connection of its own


def id_routes(server: trio_events.RunningServer) -> list[tuple[str, str, list[str]]]:
    """(method, rule, its id arguments) of every route with an id in its path."""
    found = []
    for rule in create_app(server.services).url_map.iter_rules():
        names = re.findall(r"<int:(\w+)>", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if names:
                found.append((method, rule.rule, names))
    return found


def fill(rule: str, values: dict[str, str]) -> str:
    path = re.sub(r"<int:(\w+)>", lambda m: values.get(m.group(1), "1"), rule)
    return re.sub(r"<\w+:\w+>", "f.txt", path)


async def test_the_url_map_has_id_routes(server: trio_events.RunningServer) -> None:
    rules = {rule for _, rule, _ in id_routes(server)}
    assert "/api/v1/rooms/<int:room_id>/members/<int:user_id>" in rules
    assert len(rules) >= 15


@pytest.mark.parametrize("bad", OUT_OF_RANGE_IDS)
async def test_path_ids_out_of_range_are_404_on_every_route(
    client: httpx.AsyncClient, server: trio_events.RunningServer, bad: str
) -> None:
    """Not a 500 from the store ("int too large"), and no route taken with a
    number that is not an id: the same 404 as any id that does not exist."""
    failures = []
    with trio.fail_after(TEST_TIMEOUT):
        admin = await login_admin(client)
        room = await server.services.rooms.create(None, {"displayName": "R", "roomType": "Public"})
        assert room["roomId"] == 1
        for method, rule, names in id_routes(server):
            for name in names:
                path = fill(rule, {name: bad})
                response = await client.request(method, path, headers={**admin, **CLOSE})
                if response.status_code != 404:
                    failures.append(f"{method} {path[:80]}: {response.status_code}")
                else:
                    assert_error(response, 404)
    assert not failures


async def test_the_largest_id_reaches_the_routes_and_is_not_found(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    """MAX_ID is a valid id: every route looks it up and answers a 4xx."""
    failures = []
    with trio.fail_after(TEST_TIMEOUT):
        admin = await login_admin(client)
        await server.services.rooms.create(None, {"displayName": "R", "roomType": "Public"})
        for method, rule, names in id_routes(server):
            for name in names:
                path = fill(rule, {name: str(MAX_ID)})
                body = {"content": "x"} if method in ("POST", "PATCH") else None
                response = await client.request(method, path, json=body, headers={**admin, **CLOSE})
                if not 400 <= response.status_code < 500:
                    failures.append(f"{method} {path}: {response.status_code}")
                else:
                    assert_error(response, response.status_code)
    assert not failures


ROOM = {"displayName": "x", "roomType": "Public"}


def issue(ids: list[object]) -> dict[str, Any]:
    return {"content": "i", "messageType": "Issue", "issueProperties": {"assignees": ids}}


ID_BODIES: list[tuple[str, str, Callable[[list[object]], dict[str, Any]]]] = [
    ("POST", "/api/v1/rooms", lambda ids: {**ROOM, "memberIds": ids}),
    ("POST", "/api/v1/rooms", lambda ids: {**ROOM, "moderatorIds": ids}),
    ("POST", "/api/v1/rooms/1/messages", issue),
    ("POST", "/api/v1/rooms/1/messages", lambda ids: {"messages": [issue(ids)]}),
    ("POST", "/api/v1/messages/1/comments", issue),
    ("PATCH", "/api/v1/messages/2", lambda ids: {"issueProperties": {"assignees": ids}}),
]


@pytest.mark.parametrize("bad", [0, -1, MAX_ID + 1, 2**63, 10**30, 1.5, "1", True, None])
@pytest.mark.parametrize(("method", "path", "body"), ID_BODIES)
async def test_body_ids_out_of_range_are_400(
    client: httpx.AsyncClient,
    server: trio_events.RunningServer,
    method: str,
    path: str,
    body: Callable[[list[object]], dict[str, Any]],
    bad: object,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin = await login_admin(client)
        room = await server.services.rooms.create(None, {"displayName": "R", "roomType": "Public"})
        posted = await client.post(
            f"/api/v1/rooms/{room['roomId']}/messages",
            json={"messages": [{"content": "a"}, {"content": "b", "messageType": "Issue"}]},
            headers=admin,
        )
        assert posted.json()["messageIds"] == [1, 2]
        latest = await server.services.store.read(lambda tx: tx.latest_event_id())
        response = await client.request(method, path, json=body([1, bad]), headers=admin)
        assert await server.services.store.read(lambda tx: tx.latest_event_id()) == latest
    text = assert_error(response, 400)["errorText"]
    assert f"user ids (integers from 1 to {MAX_ID})" in text


# Failed requests change nothing: every row of every table is compared.


async def test_failed_requests_leave_every_table_unchanged(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        admin = await admin_actor(client)
        alice, bob, carol = await user_actors(client, server, "alice", "bob", "carol")
        lobby = await create_room(client, admin, "lobby", "Public")
        team = await create_room(client, admin, "team", "Private", [alice, bob])
        old = await create_room(client, admin, "old", "Public")
        parent = await post(client, alice, team, "parent")
        reply = await comment(client, bob, parent, "reply")
        issue = await post(
            client,
            alice,
            team,
            "task",
            messageType="Issue",
            issueProperties={"assignees": [bob.user_id]},
        )
        frozen = await post(client, alice, old, "frozen")
        body_of(
            await client.patch(
                f"/api/v1/rooms/{old}", json={"isArchived": True}, headers=admin.headers
            )
        )
        huge = 10**30
        bad: list[tuple[Actor | None, str, str, Any, int]] = [
            (alice, "POST", f"/api/v1/rooms/{team}/messages", {}, 400),
            (
                alice,
                "POST",
                f"/api/v1/rooms/{team}/messages",
                {"messages": [{"content": "ok"}, {"content": ""}]},
                400,
            ),
            (
                alice,
                "POST",
                f"/api/v1/rooms/{team}/messages",
                {"content": "x", "messageType": "Meeting"},
                400,
            ),
            (
                alice,
                "POST",
                f"/api/v1/rooms/{team}/messages",
                {"content": "x", "messageType": "Issue", "issueProperties": {"assignees": [huge]}},
                400,
            ),
            (carol, "POST", f"/api/v1/rooms/{team}/messages", {"content": "x"}, 404),
            (alice, "POST", f"/api/v1/rooms/{old}/messages", {"content": "x"}, 403),
            (alice, "POST", f"/api/v1/messages/{reply}/comments", {"content": "x"}, 400),
            (bob, "PATCH", f"/api/v1/messages/{parent}", {"content": "x"}, 403),
            (bob, "PATCH", f"/api/v1/messages/{issue}", {"content": "x"}, 403),
            (
                alice,
                "PATCH",
                f"/api/v1/messages/{issue}",
                {"issueProperties": {"assignees": [424242]}},
                400,
            ),
            (bob, "DELETE", f"/api/v1/messages/{parent}", None, 403),
            (alice, "DELETE", f"/api/v1/messages/{frozen}", None, 403),
            (carol, "POST", f"/api/v1/messages/{parent}/read", None, 404),
            (carol, "POST", f"/api/v1/messages/{huge}/read", None, 404),
            (bob, "PUT", f"/api/v1/rooms/{team}/members/{carol.user_id}", {}, 403),
            (admin, "PUT", f"/api/v1/rooms/{team}/members/424242", {}, 404),
            (admin, "PUT", f"/api/v1/rooms/{team}/members/{huge}", {}, 404),
            (
                admin,
                "PUT",
                f"/api/v1/rooms/{team}/members/{carol.user_id}",
                {"isModerator": "yes"},
                400,
            ),
            (admin, "DELETE", f"/api/v1/rooms/{team}/members/{carol.user_id}", None, 404),
            (
                admin,
                "POST",
                "/api/v1/rooms",
                {"displayName": "x", "roomType": "Public", "memberIds": [424242]},
                400,
            ),
            (
                admin,
                "POST",
                "/api/v1/rooms",
                {"displayName": "x", "roomType": "Public", "memberIds": [huge]},
                400,
            ),
            (alice, "POST", "/api/v1/rooms", {"displayName": "x", "roomType": "Public"}, 403),
            (admin, "PATCH", f"/api/v1/rooms/{team}", {"roomType": "Secret"}, 400),
            (alice, "PATCH", f"/api/v1/rooms/{team}", {"isArchived": True}, 403),
            (alice, "DELETE", f"/api/v1/rooms/{team}", None, 403),
            (carol, "PUT", f"/api/v1/rooms/{team}/pin", None, 404),
            (
                admin,
                "POST",
                "/api/v1/users",
                {"userName": "alice", "password": "long-enough-1"},
                409,
            ),
            (alice, "PATCH", f"/api/v1/users/{bob.user_id}", {"isAdmin": True}, 403),
            (None, "POST", f"/api/v1/rooms/{lobby}/messages", {"content": "x"}, 401),
            (alice, "PUT", f"/api/v1/rooms/{lobby}/messages", {"content": "x"}, 405),
            (
                None,
                "POST",
                "/api/v1/login",
                {"userName": "alice", "password": "wrong-password"},
                401,
            ),
            (alice, "GET", f"/api/v1/rooms/{team}/messages?cursor={huge}", None, 400),
        ]
        before = await snapshot(client, server, admin)
        for actor, method, path, body, status in bad:
            headers = {**(actor.headers if actor else {}), **CLOSE}
            response = await client.request(method, path, json=body, headers=headers)
            assert_error(response, status)
        after = await snapshot(client, server, admin)
        assert after == before
        # The tables catch what the admin's view of the API does not show:
        # carol's pin of the lobby (a row of room_pins and an event for her).
        body_of(await client.put(f"/api/v1/rooms/{lobby}/pin", headers=carol.headers))
        pinned = await snapshot(client, server, admin)
    seen_by_admin = {"rooms", *(key for key in before if key.startswith("history/"))}
    assert {key: pinned[key] for key in seen_by_admin} == {
        key: before[key] for key in seen_by_admin
    }
    assert pinned["database"]["room_pins"] == [(lobby, carol.user_id)]
    assert pinned["database"] != before["database"]
