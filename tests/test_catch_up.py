"""Catch-up over plain HTTP: ``GET /api/v1/events?since=&limit=`` (API.md 8).

The same filtering as a resumed stream (compared frame for frame), pages
capped by ``limits.max_page``, paging on ``eventId`` without gap or duplicate,
ResyncRequired when too old, and the errors: 400 and 401.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

import trio_events
from trio_events import replay
from trio_events.retention import trim_once

from .helpers import TEST_TIMEOUT, assert_error, serving
from .rest_helpers import Actor, admin_actor, body_of, create_room, post, user_actors
from .resume_helpers import (
    before_later_reads,
    latest_id,
    open_resume,
    oracle,
    replayed,
    trimmed_through,
)
from .stream_helpers import Json, stream_config, wait_routed, wait_subscribers


async def catch_up(client: httpx.AsyncClient, actor: Actor, **params: Any) -> Json:
    body = body_of(await client.get("/api/v1/events", params=params, headers=actor.headers))
    assert set(body) == {"events", "eventId", "httpStatusCode"}, body
    return body


async def setup(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> tuple[Actor, Actor, int, int]:
    admin = await admin_actor(client)
    (alice,) = await user_actors(client, server, "alice")
    lobby = await create_room(client, admin, "lobby", "Public")
    team = await create_room(client, admin, "team", "Private", [alice])
    secret = await create_room(client, admin, "secret", "Private")
    mid = await latest_id(server)
    for i in range(6):
        await post(client, admin, (lobby, team, secret)[i % 3], f"m{i}")
    path = f"/api/v1/rooms/{team}/members/{alice.user_id}"
    body_of(await client.delete(path, headers=admin.headers))
    await post(client, admin, team, "alice is out")
    await post(client, admin, lobby, "last")
    return admin, alice, lobby, mid


async def test_same_as_a_resumed_stream(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            admin, alice, _, mid = await setup(client, server)
            newest = await wait_routed(server.services)
            for actor in (alice, admin):
                for since in (0, mid, newest - 3, newest):
                    body = await catch_up(client, actor, since=since)
                    assert body["eventId"] == newest
                    async with open_resume(server, list(actor.headers.items()), since) as stream:
                        assert stream.hello["resumed"] is True
                        assert body["events"] == await replayed(stream), (actor, since)
                    expected = await oracle(server.services.store, actor.user_id, since, newest)
                    assert body["events"] == expected
            no_since = await catch_up(client, alice)
            assert no_since["events"] == []
            assert no_since["eventId"] == newest
            await wait_subscribers(server, 0)


async def test_limit_caps_and_paging(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        config = stream_config(tmp_path, limits={"max_page": 7})
        async with serving(config) as (server, client):
            admin, alice, lobby, _ = await setup(client, server)
            for i in range(10):
                await post(client, admin, lobby, f"more {i}")
            newest = await wait_routed(server.services)
            everything = await oracle(server.services.store, alice.user_id, 0, newest)
            assert len(everything) > 14
            assert len((await catch_up(client, alice, since=0))["events"]) == 7
            assert len((await catch_up(client, alice, since=0, limit=3))["events"]) == 3
            assert len((await catch_up(client, alice, since=0, limit=1000))["events"]) == 7
            for limit in (1, 4, 7):
                since, pages = 0, []
                while since != newest:
                    body = await catch_up(client, alice, since=since, limit=limit)
                    assert len(body["events"]) <= limit
                    assert body["eventId"] > since or not body["events"]
                    pages.extend(body["events"])
                    since = body["eventId"]
                assert pages == everything, limit
            last = await catch_up(client, alice, since=newest)
            assert last == {"events": [], "eventId": newest, "httpStatusCode": 200}


async def test_resync_required_when_too_old(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        config = stream_config(tmp_path)
        async with serving(config) as (server, client):
            _, alice, _, mid = await setup(client, server)
            newest = await wait_routed(server.services)
            events = attrs.evolve(config.events, retention_events=4)
            await trim_once(server.services.store, events)
            trimmed = await trimmed_through(server.services.store)
            assert trimmed == newest - 4
            for since in (0, mid, trimmed - 1):
                body = await catch_up(client, alice, since=since)
                assert body == {
                    "events": [{"type": "ResyncRequired", "data": {"oldestEventId": trimmed + 1}}],
                    "eventId": newest,
                    "httpStatusCode": 200,
                }
            body = await catch_up(client, alice, since=trimmed)
            assert body["eventId"] == newest
            assert all(e["type"] != "ResyncRequired" for e in body["events"])


async def test_errors(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            _, alice, _, _ = await setup(client, server)
            newest = await wait_routed(server.services)
            bad: list[dict[str, Any]] = [
                {"since": "abc"},
                {"since": "-1"},
                {"since": "1.5"},
                {"since": newest + 1},
                {"since": 0, "limit": 0},
                {"since": 0, "limit": -3},
                {"since": 0, "limit": "ten"},
                {"since": 0, "limit": "1e3"},
                {"since": [0, 0]},
                {"since": [0, 1], "limit": 3},
                {"since": 0, "limit": [3, 3]},
                {"since": ["abc", 0]},
            ]
            for params in bad:
                response = await client.get("/api/v1/events", params=params, headers=alice.headers)
                assert_error(response, 400)
            for params in ({}, {"since": 0}, {"since": "abc"}, {"bogus": 1}, {"since": [0, 1]}):
                response = await client.get("/api/v1/events", params=params)
                assert_error(response, 401)
            bad_token = {"Authorization": "Bearer nope"}
            response = await client.get("/api/v1/events", params={"since": 0}, headers=bad_token)
            assert_error(response, 401)


async def test_a_full_page_then_only_invisible_events_is_the_last_page(tmp_path: Path) -> None:
    """``limit`` visible events followed by events the user may not see: the page
    holds them all and ``eventId`` is the newest, so the client stops there."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            admin, alice, lobby, _ = await setup(client, server)
            mark = await wait_routed(server.services)
            await post(client, admin, lobby, "for alice")
            secret = await create_room(client, admin, "another secret", "Private")
            await post(client, admin, secret, "not for alice")
            newest = await wait_routed(server.services)
            expected = await oracle(server.services.store, alice.user_id, mark, newest)
            body = await catch_up(client, alice, since=mark, limit=len(expected))
            assert body == {"events": expected, "eventId": newest, "httpStatusCode": 200}
            short = await catch_up(client, alice, since=mark, limit=len(expected) - 1)
            assert short["events"] == expected[:-1]
            assert mark < short["eventId"] < expected[-1]["eventId"]


async def test_trim_between_the_reads_of_a_short_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page cut short by ``limit`` after its second read, with retention
    trimming past ``since`` in between, must not skip what was trimmed: the
    answer is ResyncRequired, never a page with a hole."""
    monkeypatch.setattr(replay, "BATCH", 3)
    with trio.fail_after(TEST_TIMEOUT):
        config = stream_config(tmp_path)
        async with serving(config) as (server, client):
            admin, alice, lobby, _ = await setup(client, server)
            store = server.services.store
            since = await wait_routed(server.services)
            for i in range(5):  # ten events, every one for alice
                await post(client, admin, lobby, f"m{i}")
            newest = await wait_routed(server.services)
            assert len(await oracle(store, alice.user_id, since, newest)) == 10
            events = attrs.evolve(config.events, retention_events=2)

            async def trim() -> None:
                await trim_once(store, events)

            reads = before_later_reads(monkeypatch, store, trim)
            body = await catch_up(client, alice, since=since, limit=4)
            assert reads == [since + 3]
            assert body == {
                "events": [{"type": "ResyncRequired", "data": {"oldestEventId": newest - 1}}],
                "eventId": newest,
                "httpStatusCode": 200,
            }


async def test_unknown_parameters_are_ignored(tmp_path: Path) -> None:
    """As on the stream: clients and proxies add cache-busters (``_=``)."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            _, alice, _, mid = await setup(client, server)
            await wait_routed(server.services)
            plain = await catch_up(client, alice, since=mid, limit=3)
            assert len(plain["events"]) == 3
            assert await catch_up(client, alice, since=mid, limit=3, _="1700000000") == plain
            assert await catch_up(client, alice, _=1, since=mid, lmit=5, limit=3) == plain
            assert (await catch_up(client, alice, after=0))["events"] == []
