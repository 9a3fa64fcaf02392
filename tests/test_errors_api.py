"""Every error path answers JSON with errorText and httpStatusCode == status (API.md 1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from .helpers import (
    ADMIN_NAME,
    ADMIN_PASSWORD,
    TEST_TIMEOUT,
    assert_error,
    login_admin,
    make_config,
    serving,
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
