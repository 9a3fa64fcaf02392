"""``/api/v1/events`` end to end: the real server under hypercorn, trio-websocket clients.

The table of API.md section 8 is checked row by row for four users at once
(see :class:`tests.stream_helpers.World`); then the handshake (401, 403, 429),
the close codes (1009, 1008, 4001, 4008, 1001) and Ping/Pong.  After each
scenario the broker must be left with no subscriber.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed
from wsproto.events import CloseConnection, Ping, Pong

import trio_events
from trio_events.services.auth import BAD_BEARER, NO_CREDENTIALS

from .attachment_helpers import attachment_fields, delete_attachment, metadata, upload_ok
from .helpers import TEST_TIMEOUT, USER_PASSWORD, login, serving, session_headers
from .rest_helpers import (
    Actor,
    admin_actor,
    body_of,
    comment,
    create_room,
    delete_message,
    latest_event_id,
    mark_read,
    post,
    post_batch,
    user_actors,
)
from .resume_helpers import open_resume
from .stream_helpers import (
    CREATED,
    DELETED,
    HEARTBEAT,
    NAMES,
    ROOM_CREATED,
    ROOM_DELETED,
    ROOM_UPDATED,
    UPDATED,
    Json,
    bearer,
    cookie,
    ignore_pings,
    message_fields,
    no_task_left_behind,
    only,
    open_stream,
    rejection,
    rooms,
    stream_config,
    summary,
    wait_subscribers,
    wait_until,
    world,
)
from .transport_helpers import raw_ws


async def test_message_rows(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with world(stream_config(tmp_path)) as w:
            c, a = w.client, w.actors
            team = await create_room(c, a["admin"], "team", "Private", [a["alice"], a["bob"]])
            got = await w.settle()
            only(
                got,
                admin=[(ROOM_CREATED, team)],
                alice=[(ROOM_CREATED, team)],
                bob=[(ROOM_CREATED, team)],
            )

            def members(*frames: tuple[str, int]) -> dict[str, list[tuple[str, int]]]:
                return {name: list(frames) for name in ("admin", "alice", "bob")}

            first = await post(c, a["alice"], team)
            got = await w.settle()
            only(got, **members((CREATED, team), (ROOM_UPDATED, team)))
            assert message_fields(got["bob"][0], "messageId", "userId") == [
                (first, a["alice"].user_id)
            ]
            assert rooms(got, "unreadMessageCount") == {"admin": 1, "alice": 0, "bob": 1}
            assert rooms(got, "lastMessage")["bob"] == {
                "messageId": first,
                "userId": a["alice"].user_id,
                "createdUtc": got["bob"][0]["data"]["messages"][0]["createdUtc"],
            }

            batch = await post_batch(c, a["bob"], team, ["b1", "b2"])
            got = await w.settle()
            only(got, **members((CREATED, team), (ROOM_UPDATED, team)))
            assert message_fields(got["admin"][0], "messageId", "text") == [
                (batch[0], "b1"),
                (batch[1], "b2"),
            ]
            assert rooms(got, "unreadMessageCount") == {"admin": 3, "alice": 2, "bob": 1}

            reply = await comment(c, a["bob"], first)
            got = await w.settle()
            only(got, **members((CREATED, team), (UPDATED, team)))
            assert message_fields(got["alice"][0], "messageId", "parentMessageId") == [
                (reply, first)
            ]
            assert message_fields(got["alice"][1], "messageId", "commentCount") == [(first, 1)]
            assert rooms(got, "unreadMessageCount") == {}  # a comment changes no room

            edit = {"content": "edited"}
            response = await c.patch(
                f"/api/v1/messages/{first}", json=edit, headers=a["alice"].headers
            )
            body_of(response)
            got = await w.settle()
            only(got, **members((UPDATED, team)))
            assert message_fields(got["bob"][0], "messageId", "text") == [(first, "edited")]

            await delete_message(c, a["bob"], reply)
            got = await w.settle()
            only(got, **members((DELETED, team), (UPDATED, team)))
            deleted = {"parentMessageId": first, "roomId": team, "messageId": reply}
            assert all(got[name][0]["data"] == deleted for name in ("admin", "alice", "bob"))
            assert message_fields(got["admin"][1], "messageId", "commentCount") == [(first, 0)]

            await mark_read(c, a["alice"], batch[0])
            got = await w.settle()
            only(
                got, **members((UPDATED, team)) | {"alice": [(UPDATED, team), (ROOM_UPDATED, team)]}
            )
            read_by = {r["userId"] for r in got["bob"][0]["data"]["messages"][0]["readTimestamps"]}
            assert read_by == {a["alice"].user_id, a["bob"].user_id}
            assert rooms(got, "unreadMessageCount") == {"alice": 1}

            await delete_message(c, a["bob"], batch[1])  # the newest: lastMessage changes
            got = await w.settle()
            only(got, **members((DELETED, team), (ROOM_UPDATED, team)))
            assert got["bob"][0]["data"] == {
                "parentMessageId": 0,
                "roomId": team,
                "messageId": batch[1],
            }
            assert {n: r["messageId"] for n, r in rooms(got, "lastMessage").items()} == {
                "admin": batch[0],
                "alice": batch[0],
                "bob": batch[0],
            }
            assert rooms(got, "unreadMessageCount") == {"admin": 2, "alice": 0, "bob": 1}

            body_of(await c.put(f"/api/v1/rooms/{team}/pin", headers=a["bob"].headers))
            got = await w.settle()
            only(got, bob=[(ROOM_UPDATED, team)])
            assert rooms(got, "isPinned") == {"bob": True}


async def test_attachment_pin_moderator_and_older_delete_rows(tmp_path: Path) -> None:
    """The rows test_message_rows and test_room_rows leave out: attachments
    added and removed, unpin, an existing member's moderator flag, and the
    delete of a message that is not the newest."""
    with trio.fail_after(TEST_TIMEOUT):
        async with world(stream_config(tmp_path)) as w:
            c, a = w.client, w.actors
            admin = a["admin"].headers
            team = await create_room(c, a["admin"], "team", "Private", [a["alice"], a["bob"]])
            older = await post(c, a["alice"], team, "older")
            newer = await post(c, a["alice"], team, "newer")
            await w.settle()

            def members(*frames: tuple[str, int]) -> dict[str, list[tuple[str, int]]]:
                return {name: list(frames) for name in ("admin", "alice", "bob")}

            def attachments(got: dict[str, list[Json]]) -> dict[str, list[Json]]:
                messages = {
                    name: frames[0]["data"]["messages"] for name, frames in got.items() if frames
                }
                assert all(len(m) == 1 and m[0]["messageId"] == older for m in messages.values())
                return {name: m[0]["attachments"] for name, m in messages.items()}

            files = [("one.txt", b"1"), ("two.txt", b"22")]
            first, second = await upload_ok(c, a["alice"], older, files)
            got = await w.settle()
            only(got, **members((UPDATED, team)))
            meta = [attachment_fields(await metadata(c, a["bob"], i)) for i in (first, second)]
            assert attachments(got) == dict.fromkeys(("admin", "alice", "bob"), meta)

            body_of(await delete_attachment(c, a["alice"], first))
            got = await w.settle()
            only(got, **members((UPDATED, team)))
            assert attachments(got) == dict.fromkeys(("admin", "alice", "bob"), meta[1:])

            bob_url = f"/api/v1/rooms/{team}/members/{a['bob'].user_id}"
            for flag in (True, False):
                body_of(await c.put(bob_url, json={"isModerator": flag}, headers=admin))
                got = await w.settle()
                only(got, bob=[(ROOM_UPDATED, team)])
                assert rooms(got, "isModerator") == {"bob": flag}
            body_of(await c.put(bob_url, json={"isModerator": False}, headers=admin))
            only(await w.settle())  # no change, no event

            pin_url = f"/api/v1/rooms/{team}/pin"
            body_of(await c.put(pin_url, headers=a["bob"].headers))
            await w.settle()
            body_of(await c.delete(pin_url, headers=a["bob"].headers))
            got = await w.settle()
            only(got, bob=[(ROOM_UPDATED, team)])
            assert rooms(got, "isPinned") == {"bob": False}

            await delete_message(c, a["alice"], older)  # unread counts change
            got = await w.settle()
            only(got, **members((DELETED, team), (ROOM_UPDATED, team)))
            deleted = {"parentMessageId": 0, "roomId": team, "messageId": older}
            assert all(got[name][0]["data"] == deleted for name in ("admin", "alice", "bob"))
            assert rooms(got, "unreadMessageCount") == {"admin": 1, "alice": 0, "bob": 1}
            last_messages = {n: r["messageId"] for n, r in rooms(got, "lastMessage").items()}
            assert last_messages == dict.fromkeys(("admin", "alice", "bob"), newer)

            await post(c, a["alice"], team, "newest")
            await mark_read(c, a["admin"], newer)
            await mark_read(c, a["bob"], newer)
            await w.settle()
            await delete_message(c, a["alice"], newer)  # read by all: no unread count changes
            got = await w.settle()
            only(got, **members((DELETED, team)))


async def test_room_rows(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with world(stream_config(tmp_path)) as w:
            c, a = w.client, w.actors
            admin = a["admin"].headers
            private = await create_room(
                c, a["admin"], "private", "Private", [a["alice"]], [a["alice"]]
            )
            got = await w.settle()
            only(got, admin=[(ROOM_CREATED, private)], alice=[(ROOM_CREATED, private)])
            assert rooms(got, "isModerator", ROOM_CREATED) == {"admin": False, "alice": True}

            public = await create_room(c, a["admin"], "public", "Public")
            got = await w.settle()
            only(got, **{name: [(ROOM_CREATED, public)] for name in NAMES})

            url = f"/api/v1/rooms/{public}"
            body_of(await c.patch(url, json={"displayName": "renamed"}, headers=admin))
            got = await w.settle()
            only(got, **{name: [(ROOM_UPDATED, public)] for name in NAMES})
            assert set(rooms(got, "displayName").values()) == {"renamed"}

            body_of(await c.patch(url, json={"roomType": "Private"}, headers=admin))
            got = await w.settle()
            lost = [(ROOM_DELETED, public)]
            only(got, admin=[(ROOM_UPDATED, public)], alice=lost, bob=lost, carol=lost)
            assert got["carol"][0]["data"] == {"roomId": public}

            body_of(await c.patch(url, json={"roomType": "Public"}, headers=admin))
            got = await w.settle()
            gained = [(ROOM_CREATED, public)]
            only(got, admin=[(ROOM_UPDATED, public)], alice=gained, bob=gained, carol=gained)
            assert set(rooms(got, "roomType", ROOM_CREATED).values()) == {"Public"}

            bob_url = f"/api/v1/rooms/{private}/members/{a['bob'].user_id}"
            await post(c, a["alice"], private, "before bob")
            await w.settle()
            body_of(await c.put(bob_url, json={"isModerator": True}, headers=admin))
            got = await w.settle()
            only(got, bob=[(ROOM_CREATED, private)])
            assert rooms(got, "isModerator", ROOM_CREATED) == {"bob": True}
            assert rooms(got, "unreadMessageCount", ROOM_CREATED) == {"bob": 1}

            message = await post(c, a["alice"], private, "bob can see this")
            got = await w.settle()
            inside = [(CREATED, private), (ROOM_UPDATED, private)]
            only(got, admin=inside, alice=inside, bob=inside)

            body_of(await c.delete(bob_url, headers=admin))
            got = await w.settle()
            only(got, bob=[(ROOM_DELETED, private)])
            assert got["bob"][0]["data"] == {"roomId": private}

            await post(c, a["alice"], private, "bob must not see this")
            await mark_read(c, a["admin"], message)
            edit = {"content": "edited"}
            body_of(await c.patch(f"/api/v1/messages/{message}", json=edit, headers=admin))
            got = await w.settle()  # the lobby sentinel reaches bob first and alone
            with_read = [*inside, (UPDATED, private), (ROOM_UPDATED, private), (UPDATED, private)]
            only(got, admin=with_read, alice=[*inside, (UPDATED, private), (UPDATED, private)])

            body_of(await c.delete(f"/api/v1/rooms/{private}", headers=admin))
            got = await w.settle()
            only(got, admin=[(ROOM_DELETED, private)], alice=[(ROOM_DELETED, private)])


async def test_hello_cookie_and_bearer(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            admin = await admin_actor(client)
            (alice,) = await user_actors(client, server, "alice")
            room = await create_room(client, admin, "lobby", "Public")
            token = body_of(await client.post("/api/v1/token", headers=alice.headers))["token"]
            mark = await latest_event_id(server)
            async with (
                no_task_left_behind(),  # the client closes both streams
                open_stream(server, list(alice.headers.items())) as by_cookie,
                open_stream(server, bearer(token)) as by_bearer,
            ):
                for stream in (by_cookie, by_bearer):
                    assert stream.hello == {
                        "userId": alice.user_id,
                        "heartbeatInterval": HEARTBEAT,
                        "eventId": mark,
                        "resumed": False,
                        "replayed": 0,
                    }
                await post(client, admin, room)
                last = await latest_event_id(server)
                assert summary(await by_cookie.until(last)) == [
                    (CREATED, room),
                    (ROOM_UPDATED, room),
                ]
                assert summary(await by_bearer.until(last)) == [
                    (CREATED, room),
                    (ROOM_UPDATED, room),
                ]
            await wait_subscribers(server, 0)


async def refused(server: trio_events.RunningServer, headers: list[tuple[str, str]]) -> Json:
    """The refused handshake's JSON error body, with its status as ``status``."""
    error = await rejection(server, headers)
    assert error.body is not None
    body: Json = json.loads(error.body)
    assert body["httpStatusCode"] == error.status_code
    assert body["errorText"]
    retry_after = dict(error.headers).get(b"retry-after")
    return {"status": error.status_code, "retryAfter": retry_after, **body}


async def test_handshake_refusals(tmp_path: Path) -> None:
    config = stream_config(
        tmp_path,
        server={"allowed_origins": ["http://good.example"]},
        events={"max_streams_per_user": 2},
    )
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            session = alice.headers["Cookie"].split("=", 1)[1]
            token = body_of(await client.post("/api/v1/token", headers=alice.headers))["token"]
            no_credentials = await refused(server, [])
            assert no_credentials["status"] == 401
            assert no_credentials["errorText"] == NO_CREDENTIALS
            assert (await refused(server, cookie("not-a-session")))["status"] == 401
            bad_bearer = await refused(server, [*bearer("not-a-token"), ("Origin", server.url)])
            assert (bad_bearer["status"], bad_bearer["errorText"]) == (401, BAD_BEARER)
            own = urlsplit(server.url)
            foreign = [
                "http://evil.example",
                f"http://{own.hostname}:{own.port + 1 if own.port else 1}",  # another port
                f"https://{own.netloc}",  # another scheme
                "null",
            ]
            for origin in foreign:
                answer = await refused(server, [*cookie(session), ("Origin", origin)])
                assert answer["status"] == 403, origin
            for origin in (server.url, server.url.upper(), "http://good.example"):
                async with open_stream(server, [*cookie(session), ("Origin", origin)]) as stream:
                    assert stream.hello["userId"] == alice.user_id
            async with open_stream(server, [*bearer(token), ("Origin", "http://evil.example")]):
                pass
            await wait_subscribers(server, 0)
            async with open_stream(server, cookie(session)), open_stream(server, bearer(token)):
                too_many = await refused(server, cookie(session))
                assert too_many["status"] == 429
                assert too_many["retryAfter"] is not None
            await wait_subscribers(server, 0)
            async with open_stream(server, cookie(session)):
                pass  # the cap counts open streams only
            await wait_subscribers(server, 0)


async def test_client_frames_ping_size_and_rate(tmp_path: Path) -> None:
    config = stream_config(tmp_path, events={"max_client_frame": 256, "client_frame_rate": 5})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            headers = list(alice.headers.items())
            async with no_task_left_behind(), open_stream(server, headers) as stream:
                await stream.ws.send_message('{"type":"Ping","data":{"a":1}}')
                assert json.loads(await stream.ws.get_message()) == {
                    "type": "Pong",
                    "data": {"a": 1},
                }
                await stream.ws.send_message("x" * 300)
                assert await stream.close_code() == 1009
            async with no_task_left_behind(), open_stream(server, headers) as stream:
                with contextlib.suppress(ConnectionClosed):  # closed before the tenth
                    for _ in range(10):
                        await stream.ws.send_message("noise")
                assert await stream.close_code() == 1008
            await wait_subscribers(server, 0)


async def test_websocket_pings_count_against_the_rate(tmp_path: Path) -> None:
    """Control frames are client frames: the sixth ping within a second (the
    rate is 5) gets the 1008 close instead of a pong."""
    config = stream_config(tmp_path, events={"client_frame_rate": 5})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            headers = list(alice.headers.items())
            async with no_task_left_behind(), raw_ws(server, headers) as (ws, _):
                pings = [ws.ws.send(Ping(payload=str(n).encode())) for n in range(6)]
                await ws.stream.send_all(b"".join(pings))  # at once: within one second
                pongs: list[bytes] = []
                while not isinstance(event := await ws.event(), CloseConnection):
                    assert event is not None, "the connection ended without a close"
                    if isinstance(event, Pong):
                        pongs.append(bytes(event.payload))
                assert event.code == 1008
                assert pongs == [b"0", b"1", b"2", b"3", b"4"]
            await wait_subscribers(server, 0)


async def test_unanswered_pings_close_1011(tmp_path: Path) -> None:
    """API.md 8, Heartbeat: no pong within heartbeat_timeout closes the stream."""
    config = stream_config(tmp_path, events={"heartbeat_timeout": 0.5})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            headers = list(alice.headers.items())
            async with no_task_left_behind():
                pings, code = await ignore_pings(server, headers, HEARTBEAT + 0.5 + 1.5)
            await wait_subscribers(server, 0)
    assert pings >= 1
    assert code == 1011


async def test_session_ended_4001(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            admin = await admin_actor(client)
            (first,) = await user_actors(client, server, "alice")
            second = Actor(
                first.user_id, session_headers(await login(client, "alice", USER_PASSWORD))
            )
            room = await create_room(client, admin, "lobby", "Public")
            token = body_of(await client.post("/api/v1/token", headers=first.headers))["token"]
            async with (
                no_task_left_behind(),
                open_stream(server, list(first.headers.items())) as ending,
                open_stream(server, list(second.headers.items())) as staying,
                open_stream(server, bearer(token)) as by_token,
            ):
                body_of(await client.post("/api/v1/logout", headers=first.headers))
                assert await ending.close_code() == 4001
                body_of(await client.post("/api/v1/token", headers=second.headers))
                assert await by_token.close_code() == 4001
                await post(client, admin, room)
                last = await latest_event_id(server)
                assert summary(await staying.until(last)) == [(CREATED, room), (ROOM_UPDATED, room)]
                suspend = {"status": "Suspended"}
                url = f"/api/v1/users/{first.user_id}"
                body_of(await client.patch(url, json=suspend, headers=admin.headers))
                assert await staying.close_code() == 4001
            await wait_subscribers(server, 0)


async def test_slow_consumer_4008(tmp_path: Path) -> None:
    config = stream_config(tmp_path, events={"send_queue_size": 2})
    big = "y" * 50_000
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            admin = await admin_actor(client)
            (alice, bob) = await user_actors(client, server, "alice", "bob")
            room = await create_room(client, admin, "lobby", "Public")
            broker = server.services.broker
            async with (
                no_task_left_behind(),
                open_stream(server, list(alice.headers.items())) as slow,
                open_stream(server, list(bob.headers.items())) as fast,
            ):
                posted = 0
                while broker.statistics().drops == 0:
                    assert posted < 60, "the slow stream was never closed"
                    await post_batch(client, admin, room, [big] * 10)  # ~0.5 MB per frame
                    posted += 1
                    last = await latest_event_id(server)
                    frames = await fast.until(last)  # bob keeps up with everything
                    assert summary(frames) == [(CREATED, room), (ROOM_UPDATED, room)]
                assert await slow.close_code() == 4008
                assert broker.statistics().drops >= 1
                await post(client, admin, room)
                last = await latest_event_id(server)
                assert summary(await fast.until(last)) == [(CREATED, room), (ROOM_UPDATED, room)]
                dropped_at = slow.last_event_id  # alice processed nothing after Hello
            # ... and resuming from there loses nothing (README, delivery guarantee 7)
            async with open_resume(server, list(alice.headers.items()), dropped_at) as again:
                assert again.hello["resumed"] is True
                replayed = await again.until(last)
            created = [f for f in replayed if f["type"] == CREATED]
            assert len(created) == posted + 1
            await wait_subscribers(server, 0)


async def test_server_shutdown_1001(tmp_path: Path) -> None:
    codes: list[int] = []
    received: list[Json] = []

    async def watch(
        server: trio_events.RunningServer,
        headers: list[tuple[str, str]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with open_stream(server, headers) as stream:
            task_status.started()
            with contextlib.suppress(ConnectionClosed):
                while True:
                    received.append(await stream.frame())
            codes.append(await stream.close_code())

    with trio.fail_after(TEST_TIMEOUT):
        async with no_task_left_behind(), trio.open_nursery() as nursery:
            async with serving(stream_config(tmp_path)) as (server, client):
                admin = await admin_actor(client)
                (alice,) = await user_actors(client, server, "alice")
                room = await create_room(client, admin, "lobby", "Public")
                await nursery.start(watch, server, list(alice.headers.items()))
                for _ in range(3):
                    await post(client, admin, room)
                last = await latest_event_id(server)
                # routed (queued, maybe not yet sent) before the shutdown starts
                await wait_until(lambda: server.services.broker.last_event_id >= last)
            assert server.services.broker.statistics().subscribers == 0
    assert codes == [1001]
    assert summary(received) == [(CREATED, room), (ROOM_UPDATED, room)] * 3
