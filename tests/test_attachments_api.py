"""Attachments over HTTP (API.md 6): round trips, headers, access and events.

What happens on disk (limits, names, deduplication, removal) is in
``test_attachment_files.py``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote

import httpx
import pytest
import trio

import trio_events

from .attachment_helpers import (
    ATTACHMENT_FIELDS,
    OCTET,
    READY,
    World,
    attachment_fields,
    delete_attachment,
    download,
    metadata,
    pattern,
    sha1,
    upload,
    upload_ok,
    world,
)
from .helpers import TEST_TIMEOUT, assert_error, make_config, serving
from .rest_helpers import (
    Actor,
    Json,
    body_of,
    client_events_after,
    comment,
    history,
    latest_event_id,
    payload,
    post,
    shape,
    user_actors,
)

KIB = 1024
ROUND_TRIP_SIZES = [0, 1, 64 * KIB - 1, 64 * KIB + 1, 3 * KIB * KIB + 17]


async def check_round_trip(
    client: httpx.AsyncClient, actor: Actor, message_id: int, name: str, data: bytes
) -> Json:
    """Upload ``data`` as ``name``, then check metadata and download; return the metadata."""
    (attachment_id,) = await upload_ok(client, actor, message_id, [(name, data)])
    found = await metadata(client, actor, attachment_id)
    response = await download(client, actor, attachment_id, name)
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))
    assert set(attachment_fields(found)) == ATTACHMENT_FIELDS
    assert found["attachmentId"] == attachment_id
    assert found["fileSize"] == len(data)
    assert found["fileChecksum"] == sha1(data)
    assert found["fileName"] == name
    assert found["attachmentState"] == READY
    assert found["hasThumbnail"] is False
    assert found["textMessageId"] == message_id
    return found


@pytest.mark.parametrize("size", ROUND_TRIP_SIZES)
async def test_round_trip_sizes(
    client: httpx.AsyncClient, server: trio_events.RunningServer, size: int
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        found = await check_round_trip(client, w.alice, message_id, "blob.bin", pattern(size, size))
    assert found["roomId"] == w.room_id
    assert found["createdUtc"] == found["lastModifiedUtc"]
    assert found["createdUtc"] > 0


async def test_exactly_at_the_per_file_limit(tmp_path: Path) -> None:
    limit = 100_000
    config = make_config(tmp_path, limits={"max_attachment_bytes": limit})
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (running, client):
            w = await world(client, running)
            message_id = await post(client, w.alice, w.room_id)
            found = await check_round_trip(client, w.alice, message_id, "edge.bin", pattern(limit))
    assert found["fileSize"] == limit


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("notes.txt", "text/plain"),
        ("photo.PNG", "image/png"),
        ("report.pdf", "application/pdf"),
        ("data.json", "application/json"),
        ("archive.unknownext", OCTET),
        ("no_extension", OCTET),
    ],
)
async def test_content_type_is_guessed_from_the_name(
    client: httpx.AsyncClient, server: trio_events.RunningServer, name: str, content_type: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        (attachment_id,) = await upload_ok(client, w.alice, message_id, [(name, b"some bytes")])
        response = await download(client, w.bob, attachment_id, name)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0].strip() == content_type
    assert response.headers["content-length"] == "10"


def disposition_names(header: str) -> tuple[str, str]:
    """The ``filename`` fallback and the decoded ``filename*`` of an RFC 6266 header."""
    kind, _, rest = header.partition(";")
    assert kind.strip() == "attachment"
    assert header.isascii()
    fallback_part, _, star_part = rest.partition("; filename*=")
    fallback_part = fallback_part.strip()
    assert fallback_part.startswith('filename="')
    assert fallback_part.endswith('"')
    fallback = fallback_part[len('filename="') : -1]
    assert star_part.startswith("UTF-8''")
    encoded = star_part[len("UTF-8''") :]
    assert all(ch not in encoded for ch in " \";\\'")
    return fallback, unquote(encoded, encoding="utf-8", errors="strict")


@pytest.mark.parametrize(
    "name",
    ["report.pdf", "résumé 2024.pdf", "документ.txt", "报告 €.bin", 'quote"semi;pct%.txt'],
)
async def test_content_disposition_rfc6266(
    client: httpx.AsyncClient, server: trio_events.RunningServer, name: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        (attachment_id,) = await upload_ok(client, w.alice, message_id, [(name, b"x")])
        response = await download(client, w.alice, attachment_id, "anything-in-the-url")
    assert response.status_code == 200
    fallback, exact = disposition_names(response.headers["content-disposition"])
    assert exact == name
    assert fallback.isascii()
    assert all(32 <= ord(ch) < 127 and ch not in '"\\' for ch in fallback)
    assert len(fallback) == len(name)
    if name.isascii() and not any(ch in name for ch in '"\\%;'):
        assert fallback == name


async def test_several_files_in_one_request(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    files = [("a.txt", b"alpha"), ("b.bin", pattern(70_000, 1)), ("c.txt", b"")]
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        ids = await upload_ok(client, w.alice, message_id, files)
        downloads = [
            await download(client, w.bob, i, name) for i, (name, _) in zip(ids, files, strict=True)
        ]
        listed = await history(client, w.bob, w.room_id)
    assert len(set(ids)) == 3
    assert [r.content for r in downloads] == [data for _, data in files]
    (message,) = listed
    attached = message["attachments"]
    assert [a["attachmentId"] for a in attached] == ids
    assert [(a["fileName"], a["fileSize"], a["fileChecksum"]) for a in attached] == [
        (name, len(data), sha1(data)) for name, data in files
    ]


async def test_upload_and_delete_events(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        mark = await latest_event_id(server)
        first, second = await upload_ok(
            client, w.alice, message_id, [("one.txt", b"1"), ("two.txt", b"22")]
        )
        uploaded = await client_events_after(server, mark)
        meta = [await metadata(client, w.alice, i) for i in (first, second)]
        mark = await latest_event_id(server)
        body_of(await delete_attachment(client, w.alice, first))
        deleted = await client_events_after(server, mark)
        listed = await history(client, w.bob, w.room_id)
    assert shape(uploaded) == [("TextMessagesUpdated", w.room_id, None)]
    (message,) = payload(uploaded[0])["messages"]
    assert message["messageId"] == message_id
    assert message["attachments"] == [attachment_fields(m) for m in meta]
    assert shape(deleted) == [("TextMessagesUpdated", w.room_id, None)]
    (after_delete,) = payload(deleted[0])["messages"]
    assert after_delete["attachments"] == [attachment_fields(meta[1])]
    assert listed[0]["attachments"] == [attachment_fields(meta[1])]


async def test_comment_attachments_events_and_listing(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        parent = await post(client, w.alice, w.room_id)
        reply = await comment(client, w.bob, parent)
        mark = await latest_event_id(server)
        (attachment_id,) = await upload_ok(client, w.bob, reply, [("c.txt", b"comment file")])
        events = await client_events_after(server, mark)
        listed = body_of(
            await client.get(f"/api/v1/messages/{parent}/comments", headers=w.alice.headers)
        )["messages"]
    assert shape(events) == [("TextMessagesUpdated", w.room_id, None)]
    (message,) = payload(events[0])["messages"]
    assert message["messageId"] == reply
    assert [a["attachmentId"] for a in message["attachments"]] == [attachment_id]
    assert [a["attachmentId"] for a in listed[0]["attachments"]] == [attachment_id]


async def test_non_members_of_a_private_room_get_404(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server, "Private")
        (carol,) = await user_actors(client, server, "carol")
        message_id = await post(client, w.alice, w.room_id)
        (attachment_id,) = await upload_ok(client, w.alice, message_id, [("s.txt", b"secret")])
        mark = await latest_event_id(server)
        upload_resp = await upload(client, carol, message_id, [("x.txt", b"x")])
        meta = await client.get(f"/api/v1/attachments/{attachment_id}", headers=carol.headers)
        dl = await download(client, carol, attachment_id, "s.txt")
        delete = await delete_attachment(client, carol, attachment_id)
        missing_meta = await client.get("/api/v1/attachments/999999", headers=w.alice.headers)
        missing_dl = await download(client, w.alice, 999999, "x")
        anonymous = await client.get(f"/api/v1/attachments/{attachment_id}/s.txt")
        events = await client_events_after(server, mark)
        still = await download(client, w.alice, attachment_id, "s.txt")
    for response in (upload_resp, meta, dl, delete, missing_meta, missing_dl):
        assert_error(response, 404)
    assert b"secret" not in dl.content
    assert_error(anonymous, 401)
    assert events == []
    assert still.content == b"secret"


async def test_a_removed_member_loses_access_to_attachments(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    """Even to the files of the message they wrote themselves."""
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server, "Private")
        message_id = await post(client, w.bob, w.room_id)
        (attachment_id,) = await upload_ok(client, w.bob, message_id, [("b.txt", b"bob's")])
        before = await download(client, w.bob, attachment_id, "b.txt")
        body_of(
            await client.delete(
                f"/api/v1/rooms/{w.room_id}/members/{w.bob.user_id}", headers=w.admin.headers
            )
        )
        mark = await latest_event_id(server)
        meta = await client.get(f"/api/v1/attachments/{attachment_id}", headers=w.bob.headers)
        dl = await download(client, w.bob, attachment_id, "b.txt")
        more = await upload(client, w.bob, message_id, [("c.txt", b"more")])
        delete = await delete_attachment(client, w.bob, attachment_id)
        events = await client_events_after(server, mark)
        still = await download(client, w.alice, attachment_id, "b.txt")
    assert before.content == b"bob's"
    for response in (meta, dl, more, delete):
        assert_error(response, 404)
    assert b"bob's" not in dl.content
    assert events == []
    assert still.content == b"bob's"


@pytest.mark.parametrize("name", ["#1 notes.txt", "?what.txt", "#", "?", "a#b?c.txt"])
async def test_names_with_url_delimiters_download_when_encoded(
    client: httpx.AsyncClient, server: trio_events.RunningServer, name: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        (attachment_id,) = await upload_ok(client, w.alice, message_id, [(name, b"odd name")])
        found = await metadata(client, w.alice, attachment_id)
        fetched = await download(client, w.alice, attachment_id, quote(name, safe=""))
    assert found["fileName"] == name
    assert fetched.status_code == 200
    assert fetched.content == b"odd name"
    assert disposition_names(fetched.headers["content-disposition"])[1] == name


@pytest.mark.parametrize("name", ["#1 notes.txt", "?what.txt", "#"])
async def test_the_stock_clients_unencoded_url_still_downloads(
    client: httpx.AsyncClient, server: trio_events.RunningServer, name: str
) -> None:
    """The Virola web client builds ``/attachments/<id>/<raw name>``; from a
    leading ``#`` or ``?`` on, the browser sends a fragment or a query, so
    the server sees ``/attachments/<id>/``."""
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server, "Private")
        (carol,) = await user_actors(client, server, "carol")
        message_id = await post(client, w.alice, w.room_id)
        (attachment_id,) = await upload_ok(client, w.alice, message_id, [(name, b"odd name")])
        url = f"/api/v1/attachments/{attachment_id}/{name}"
        fetched = await client.get(url, headers=w.bob.headers)
        outsider = await client.get(url, headers=carol.headers)
        anonymous = await client.get(url)
        missing = await client.get("/api/v1/attachments/999999/", headers=w.bob.headers)
    assert fetched.request.url.path == f"/api/v1/attachments/{attachment_id}/"
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == b"odd name"
    assert disposition_names(fetched.headers["content-disposition"])[1] == name
    assert_error(outsider, 404)
    assert b"odd name" not in outsider.content
    assert_error(anonymous, 401)
    assert_error(missing, 404)


async def test_only_author_or_moderator_may_attach_or_delete(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server, "Private")
        (mod,) = await user_actors(client, server, "mod")
        body_of(
            await client.put(
                f"/api/v1/rooms/{w.room_id}/members/{mod.user_id}",
                json={"isModerator": True},
                headers=w.admin.headers,
            )
        )
        message_id = await post(client, w.alice, w.room_id)
        (mine,) = await upload_ok(client, w.alice, message_id, [("a.txt", b"by alice")])
        mark = await latest_event_id(server)
        bob_upload = await upload(client, w.bob, message_id, [("b.txt", b"by bob")])
        bob_delete = await delete_attachment(client, w.bob, mine)
        refused = await client_events_after(server, mark)
        bob_reads = await download(client, w.bob, mine, "a.txt")
        (by_mod,) = await upload_ok(client, mod, message_id, [("m.txt", b"by mod")])
        body_of(await delete_attachment(client, mod, mine))
        body_of(await delete_attachment(client, w.admin, by_mod))
        listed = await history(client, w.alice, w.room_id)
    assert_error(bob_upload, 403)
    assert_error(bob_delete, 403)
    assert refused == []
    assert bob_reads.content == b"by alice"
    assert listed[0]["attachments"] == []


async def test_archived_room_is_read_only_for_attachments(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        (attachment_id,) = await upload_ok(client, w.alice, message_id, [("k.txt", b"kept")])
        writable = await permission_flags(client, w.alice, w.room_id)
        body_of(
            await client.patch(
                f"/api/v1/rooms/{w.room_id}", json={"isArchived": True}, headers=w.admin.headers
            )
        )
        mark = await latest_event_id(server)
        refused_upload = await upload(client, w.alice, message_id, [("n.txt", b"new")])
        refused_delete = await delete_attachment(client, w.alice, attachment_id)
        admin_delete = await delete_attachment(client, w.admin, attachment_id)
        events = await client_events_after(server, mark)
        dl = await download(client, w.bob, attachment_id, "k.txt")
        meta = await metadata(client, w.bob, attachment_id)
        archived = await permission_flags(client, w.alice, w.room_id)
    assert_error(refused_upload, 403)
    assert_error(refused_delete, 403)
    assert_error(admin_delete, 403)
    assert events == []
    assert dl.status_code == 200
    assert dl.content == b"kept"
    assert meta["fileName"] == "k.txt"
    assert {name: writable[name] for name in FILE_FLAGS} == dict.fromkeys(FILE_FLAGS, True)
    assert {name: archived[name] for name in FILE_FLAGS} == dict.fromkeys(FILE_FLAGS, False)


FILE_FLAGS = (
    "canSendFilesIntoRoomInMainThread",
    "canSendFilesIntoRoomInDiscussion",
    "canAttachOrDeleteFilesInOwnMessagesInMainThread",
    "canAttachOrDeleteFilesInOwnMessagesInDiscussion",
)


async def permission_flags(client: httpx.AsyncClient, actor: Actor, room_id: int) -> Json:
    body = body_of(await client.get(f"/api/v1/room-permissions/{room_id}", headers=actor.headers))
    flags = body["roomPermissions"]["permissions"]
    assert isinstance(flags, dict)
    return flags


async def test_public_room_any_user_may_attach_to_own_message(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        (erin,) = await user_actors(client, server, "erin")  # not a member, but Public
        message_id = await post(client, erin, w.room_id)
        (attachment_id,) = await upload_ok(client, erin, message_id, [("e.txt", b"erin")])
        flags = await permission_flags(client, erin, w.room_id)
        seen_by_alice = await download(client, w.alice, attachment_id, "e.txt")
    assert seen_by_alice.content == b"erin"
    assert all(flags[name] for name in FILE_FLAGS)


async def test_upload_to_missing_message_is_404(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w: World = await world(client, server)
        response = await upload(client, w.alice, 424242, [("x.txt", b"x")])
        anonymous = await client.post(
            f"/api/v1/messages/{await post(client, w.alice, w.room_id)}/attachments",
            files=[("files", ("x.txt", b"x", OCTET))],
        )
    assert_error(response, 404)
    assert_error(anonymous, 401)
