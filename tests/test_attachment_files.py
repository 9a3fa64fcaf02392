"""Attachment bytes on disk: limits, refused bodies, client file names,
deduplication by content and removal of files nobody refers to any more.

A refused upload must leave nothing behind: no stored or temporary file, no
attachment row, no event.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trio

import trio_events
from trio_events.config import Config
from trio_events.files import Upload
from trio_events.services.attachments import safe_file_name

from .attachment_helpers import (
    World,
    attachment_row,
    attachments_in_store,
    content_path,
    delete_attachment,
    download,
    file_part,
    files_root,
    is_safe_name,
    metadata,
    pattern,
    raw_body,
    raw_part,
    sha1,
    stored_files,
    temp_files,
    upload,
    upload_ok,
    upload_raw,
    world,
)
from .helpers import TEST_TIMEOUT, assert_error, make_config, serving
from .rest_helpers import (
    body_of,
    comment,
    create_room,
    delete_message,
    history,
    latest_event_id,
    post,
)

FILE_LIMIT = 100_000
REQUEST_LIMIT = 150_000
FILES_LIMIT = 3
KEPT = b"already attached"

Attempt = Callable[[httpx.AsyncClient, World, int], Awaitable[httpx.Response]]


def limited(tmp_path: Path) -> Config:
    return make_config(
        tmp_path,
        limits={
            "max_attachment_bytes": FILE_LIMIT,
            "max_upload_bytes": REQUEST_LIMIT,
            "max_files_per_message": FILES_LIMIT,
        },
    )


async def assert_refused_cleanly(
    tmp_path: Path, attempt: Attempt, status: int, *, already: int = 1
) -> None:
    """Run ``attempt`` on a message that has ``already`` files; expect ``status``
    and the message, the disk and the log exactly as they were."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(limited(tmp_path)) as (server, client):
            w = await world(client, server)
            message_id = await post(client, w.alice, w.room_id)
            kept = [(f"kept{i}.txt", KEPT + bytes([i])) for i in range(already)]
            ids = await upload_ok(client, w.alice, message_id, kept) if kept else []
            before = await history(client, w.bob, w.room_id)
            files_before = stored_files(server)
            mark = await latest_event_id(server)
            response = await attempt(client, w, message_id)
            after = await history(client, w.bob, w.room_id)
            rows = await attachments_in_store(server, [message_id])
            mark_after = await latest_event_id(server)
            downloads = [await download(client, w.bob, i) for i in ids]
            leftovers = temp_files(server)
            files_after = stored_files(server)
        gc.collect()  # an async generator the request leaked warns now, in this test
    assert_error(response, status)
    assert after == before
    assert [a.attachment_id for a in rows.get(message_id, [])] == ids
    assert mark_after == mark, "a refused upload appended events"
    assert leftovers == []
    assert files_after == files_before
    assert files_after == sorted(content_path(server, data) for _, data in kept)
    assert [r.content for r in downloads] == [data for _, data in kept]


def httpx_files(*files: tuple[str, bytes]) -> Attempt:
    async def attempt(client: httpx.AsyncClient, w: World, message_id: int) -> httpx.Response:
        return await upload(client, w.alice, message_id, list(files))

    return attempt


def chunked(*files: tuple[str, bytes]) -> Attempt:
    """The same upload without a Content-Length: only the streamed checks can refuse it."""
    body = raw_body(*(file_part(name.encode(), data) for name, data in files))

    async def attempt(client: httpx.AsyncClient, w: World, message_id: int) -> httpx.Response:
        return await upload_raw(client, w.alice, message_id, body, chunked=True)

    return attempt


def raw(body: bytes, content_type: str | None = None) -> Attempt:
    async def attempt(client: httpx.AsyncClient, w: World, message_id: int) -> httpx.Response:
        if content_type is None:
            return await upload_raw(client, w.alice, message_id, body)
        return await upload_raw(client, w.alice, message_id, body, content_type)

    return attempt


SMALL = ("small.txt", b"small")
AT_LIMIT = ("edge.bin", pattern(FILE_LIMIT, 1))
OVER_FILE = ("big.bin", pattern(FILE_LIMIT + 1, 2))
HALF = REQUEST_LIMIT // 2 + 10
TOO_MANY = [(f"f{i}.txt", bytes([i]) * 10) for i in range(FILES_LIMIT + 1)]

LIMIT_CASES = {
    "file-over-limit": httpx_files(SMALL, OVER_FILE),
    "file-over-limit-chunked": chunked(SMALL, OVER_FILE),
    "request-over-limit": httpx_files(("a.bin", pattern(HALF, 3)), ("b.bin", pattern(HALF, 4))),
    "request-over-limit-chunked": chunked(("a.bin", pattern(HALF, 3)), ("b.bin", pattern(HALF, 4))),
    "too-many-in-one-request": httpx_files(*TOO_MANY),
    "too-many-in-one-request-chunked": chunked(*TOO_MANY),
    "too-many-with-existing": httpx_files(SMALL, ("other.txt", b"other"), ("third.txt", b"3")),
}


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
async def test_limits_refuse_with_413_and_leave_nothing(tmp_path: Path, case: str) -> None:
    await assert_refused_cleanly(tmp_path, LIMIT_CASES[case], 413)


async def test_message_already_full_is_refused(tmp_path: Path) -> None:
    await assert_refused_cleanly(tmp_path, httpx_files(SMALL), 413, already=FILES_LIMIT)


@pytest.mark.parametrize("chunked_body", [False, True])
async def test_too_many_with_existing_is_refused_before_writing_the_extra_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, chunked_body: bool
) -> None:
    """The message has two of its three files: the second part of this
    upload is refused when it starts, not after it was written to disk."""
    opened: list[str] = []
    open_upload = Upload.open

    async def recording(self: Upload) -> None:
        opened.append(self.file_name)
        await open_upload(self)

    monkeypatch.setattr(Upload, "open", recording)
    parts = [("fits.txt", b"fits"), ("extra.bin", pattern(FILE_LIMIT, 9))]
    attempt = chunked(*parts) if chunked_body else httpx_files(*parts)
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(limited(tmp_path)) as (server, client):
            w = await world(client, server)
            message_id = await post(client, w.alice, w.room_id)
            await upload_ok(client, w.alice, message_id, [("1", b"one"), ("2", b"two")])
            opened.clear()
            response = await attempt(client, w, message_id)
            rows = await attachments_in_store(server, [message_id])
            leftovers = temp_files(server)
    assert_error(response, 413, f"A message can have at most {FILES_LIMIT} attachments")
    assert opened == ["fits.txt"]
    assert len(rows[message_id]) == 2
    assert leftovers == []


async def test_limits_allow_exactly_the_maximum(tmp_path: Path) -> None:
    files = [AT_LIMIT, SMALL, ("empty.txt", b"")]
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(limited(tmp_path)) as (server, client):
            w = await world(client, server)
            message_id = await post(client, w.alice, w.room_id)
            ids = await upload_ok(client, w.alice, message_id, files)
            sizes = [(await metadata(client, w.bob, i))["fileSize"] for i in ids]
            contents = [(await download(client, w.bob, i)).content for i in ids]
            on_disk = stored_files(server)
    assert sizes == [len(data) for _, data in files]
    assert contents == [data for _, data in files]
    assert on_disk == sorted(content_path(server, data) for _, data in files)


GOOD = file_part(b"good.txt", b"good bytes")
MALFORMED_CASES = {
    "json-content-type": raw(b'{"files": []}', "application/json"),
    "text-content-type": raw(b"hello", "text/plain"),
    "no-boundary": raw(raw_body(GOOD), "multipart/form-data"),
    "wrong-boundary": raw(raw_body(GOOD), "multipart/form-data; boundary=something-else"),
    "urlencoded": raw(b"files=abc", "application/x-www-form-urlencoded"),
    "empty-body": raw(b""),
    "garbage": raw(b"\x00\xff not multipart at all \r\n\r\n"),
    "part-named-file": raw(raw_body(file_part(b"x.txt", b"x", field=b"file"))),
    "good-then-wrong-name": raw(raw_body(GOOD, file_part(b"y.txt", b"y", field=b"other"))),
    "field-not-file": raw(raw_body(raw_part(b'form-data; name="files"', b"plain field"))),
    "no-closing-boundary": raw(raw_body(GOOD, closed=False)),
    "cut-mid-part": raw(raw_body(GOOD, closed=False)[:-20]),
    "only-closing-boundary": raw(raw_body()),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_CASES))
async def test_malformed_uploads_are_400_and_leave_nothing(tmp_path: Path, case: str) -> None:
    await assert_refused_cleanly(tmp_path, MALFORMED_CASES[case], 400)


TRAVERSAL_NAMES: dict[str, tuple[bytes, str | None]] = {
    "dotdot-slash": (b"../../etc/passwd", "passwd"),
    # a backslash in a quoted-string is an escape (RFC 7230 quoted-pair): only
    # the name's safety is checked for these; httpx_names checks the escaped form
    "dotdot-backslash": (b"..\\..\\win.ini", None),
    "absolute": (b"/etc/shadow", "shadow"),
    "windows-drive": (b"C:\\Windows\\system32\\evil.dll", None),
    "escaped-backslashes": (b"..\\\\..\\\\win.ini", "win.ini"),
    "nul": (b"evil\x00.txt", "evil.txt"),
    "controls": (b"a\x07b\x1b[31mc\x7f.txt", None),
    "only-dots": (b"..", None),
    "trailing-slash": (b"dir/", None),
    "long": (b"n" * 996 + b".txt", "n" * 251 + ".txt"),
    "long-unicode": (("ж" * 1000).encode(), None),
}


@pytest.mark.parametrize("case", sorted(TRAVERSAL_NAMES))
async def test_client_file_names_are_display_names_only(
    client: httpx.AsyncClient, server: trio_events.RunningServer, case: str
) -> None:
    raw_name, expected = TRAVERSAL_NAMES[case]
    data = f"content for {case}".encode()
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        response = await upload_raw(
            client, w.alice, message_id, raw_body(file_part(raw_name, data))
        )
        (attachment_id,) = body_of(response)["attachmentIds"]
        found = await metadata(client, w.bob, attachment_id)
        fetched = await download(client, w.bob, attachment_id, "x")
        on_disk = stored_files(server)
    name = found["fileName"]
    assert is_safe_name(name), repr(name)
    if expected is not None:
        assert name == expected
    assert fetched.content == data
    assert found["fileChecksum"] == sha1(data)
    assert "\r" not in fetched.headers["content-disposition"]
    assert on_disk == [content_path(server, data)]
    data_dir = server.services.config.data_dir
    assert not [p for p in data_dir.rglob("*") if p.name in {"passwd", "win.ini", "shadow"}]


SHORTENED = {
    "extension-kept": ("a" * 5000 + ".txt", "a" * 251 + ".txt"),
    "combining-marks-stay-with-their-letter": ("e\u0301" * 200 + ".pdf", "e\u0301" * 125 + ".pdf"),
    "flags-stay-whole": ("\U0001f1e9\U0001f1ea" * 200, "\U0001f1e9\U0001f1ea" * 127),
    "skin-tone-stays-with-its-emoji": (
        "z" * 250 + "\U0001f44d\U0001f3fd" + "zz.txt",
        "z" * 250 + ".txt",
    ),
    "long-extension-is-just-name": ("a." + "b" * 5000, "a." + "b" * 253),
    "short-name-untouched": ("résumé 2024.pdf", "résumé 2024.pdf"),
    "exactly-255": ("c" * 251 + ".txt", "c" * 251 + ".txt"),
    "one-character-longer-than-the-limit": ("e" + "\u0301" * 400, "e" + "\u0301" * 254),
}


@pytest.mark.parametrize("case", sorted(SHORTENED))
def test_long_names_are_shortened_keeping_extension_and_characters(case: str) -> None:
    raw, expected = SHORTENED[case]
    assert safe_file_name(raw) == expected
    assert len(expected) <= 255


async def test_a_shortened_name_keeps_its_content_type(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    name = "notes " * 1000 + ".txt"
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        (attachment_id,) = await upload_ok(client, w.alice, message_id, [(name, b"text")])
        found = await metadata(client, w.alice, attachment_id)
        fetched = await download(client, w.alice, attachment_id, "x")
    assert found["fileName"].endswith("notes.txt")
    assert len(found["fileName"]) == 255
    assert fetched.headers["content-type"].startswith("text/plain")


HTTPX_NAMES = {
    "../../etc/passwd": "passwd",
    "..\\..\\win.ini": "win.ini",
    "C:\\Windows\\evil.dll": "evil.dll",
    "x" * 1000 + ".bin": "x" * 251 + ".bin",
    "tab\there.txt": None,  # httpx sends control characters percent-encoded
    "/": "file",
}


@pytest.mark.parametrize("name", sorted(HTTPX_NAMES))
async def test_httpx_encoded_names(
    client: httpx.AsyncClient, server: trio_events.RunningServer, name: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        (attachment_id,) = await upload_ok(client, w.alice, message_id, [(name, b"named")])
        found = await metadata(client, w.alice, attachment_id)
        fetched = await download(client, w.alice, attachment_id, "x")
    assert is_safe_name(found["fileName"]), repr(found["fileName"])
    if HTTPX_NAMES[name] is not None:
        assert found["fileName"] == HTTPX_NAMES[name]
    assert fetched.content == b"named"
    assert stored_files(server) == [content_path(server, b"named")]


async def test_identical_content_is_stored_once(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    data = pattern(200_000, 7)
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        first = await post(client, w.alice, w.room_id)
        second = await post(client, w.bob, w.room_id)
        a, b = await upload_ok(client, w.alice, first, [("a.bin", data), ("b.bin", data)])
        (c,) = await upload_ok(client, w.bob, second, [("c.bin", data)])
        contents = [(await download(client, w.alice, i)).content for i in (a, b, c)]
        names = [(await metadata(client, w.alice, i))["fileName"] for i in (a, b, c)]
        on_disk = stored_files(server)
        leftovers = temp_files(server)
    assert contents == [data] * 3
    assert names == ["a.bin", "b.bin", "c.bin"]
    assert on_disk == [content_path(server, data)]
    assert leftovers == []


async def test_concurrent_uploads_of_the_same_content(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    data = pattern(1_500_000, 8)
    ids: dict[str, int] = {}
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_ids = {"alice": await post(client, w.alice, w.room_id)}
        message_ids["bob"] = await post(client, w.bob, w.room_id)
        actors = {"alice": w.alice, "bob": w.bob}

        async def send(who: str) -> None:
            async with httpx.AsyncClient(base_url=server.url) as own:
                (ids[who],) = await upload_ok(
                    own, actors[who], message_ids[who], [(f"{who}.bin", data)]
                )

        for _ in range(3):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, "alice")
                nursery.start_soon(send, "bob")
            contents = [(await download(client, w.alice, ids[who])).content for who in actors]
            assert contents == [data, data]
        on_disk = stored_files(server)
        leftovers = temp_files(server)
        rows = await attachments_in_store(server, list(message_ids.values()))
    assert on_disk == [content_path(server, data)]
    assert leftovers == []
    assert sorted(len(found) for found in rows.values()) == [3, 3]


async def test_file_removed_with_its_last_attachment(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    shared = b"shared content"
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        first = await post(client, w.alice, w.room_id)
        second = await post(client, w.alice, w.room_id)
        (a,) = await upload_ok(client, w.alice, first, [("a.txt", shared)])
        (b,) = await upload_ok(client, w.alice, second, [("b.txt", shared)])
        path = content_path(server, shared)
        body_of(await delete_attachment(client, w.alice, a))
        kept = path.exists()
        gone_meta = await client.get(f"/api/v1/attachments/{a}", headers=w.alice.headers)
        other = await download(client, w.bob, b)
        body_of(await delete_attachment(client, w.alice, b))
        removed = not path.exists()
        again = await delete_attachment(client, w.alice, b)
        on_disk = stored_files(server)
    assert kept
    assert_error(gone_meta, 404)
    assert other.content == shared
    assert removed
    assert_error(again, 404)
    assert on_disk == []


async def test_deleting_a_message_removes_its_and_its_comments_files(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    top, reply, shared, elsewhere = b"top file", b"reply file", b"shared file", b"other file"
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        parent = await post(client, w.alice, w.room_id)
        answer = await comment(client, w.bob, parent)
        other = await post(client, w.bob, w.room_id)
        doomed = await upload_ok(client, w.alice, parent, [("t", top), ("s", shared)])
        doomed += await upload_ok(client, w.bob, answer, [("r", reply)])
        survivors = await upload_ok(client, w.bob, other, [("s2", shared), ("e", elsewhere)])
        await delete_message(client, w.alice, parent)
        rows = [await attachment_row(server, i) for i in doomed]
        statuses = [(await download(client, w.alice, i)).status_code for i in doomed]
        kept = [(await download(client, w.alice, i)).content for i in survivors]
        on_disk = stored_files(server)
    assert rows == [None, None, None]
    assert statuses == [404, 404, 404]
    assert kept == [shared, elsewhere]
    assert on_disk == sorted(content_path(server, d) for d in (shared, elsewhere))


async def test_deleting_a_comment_removes_its_files(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        parent = await post(client, w.alice, w.room_id)
        answer = await comment(client, w.bob, parent)
        (on_parent,) = await upload_ok(client, w.alice, parent, [("p", b"parent's")])
        (on_reply,) = await upload_ok(client, w.bob, answer, [("r", b"reply's")])
        await delete_message(client, w.bob, answer)
        reply_row = await attachment_row(server, on_reply)
        parent_file = await download(client, w.alice, on_parent)
        on_disk = stored_files(server)
    assert reply_row is None
    assert parent_file.content == b"parent's"
    assert on_disk == [content_path(server, b"parent's")]


async def test_deleting_a_room_removes_files_only_it_refers_to(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    only_here, shared, kept = b"only in the doomed room", b"in both rooms", b"only in the other"
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        other_room = await create_room(client, w.admin, "other", "Public")
        doomed_msg = await post(client, w.alice, w.room_id)
        comment_id = await comment(client, w.bob, doomed_msg)
        other_msg = await post(client, w.bob, other_room)
        doomed = await upload_ok(client, w.alice, doomed_msg, [("o", only_here), ("s", shared)])
        doomed += await upload_ok(client, w.bob, comment_id, [("c", b"comment in doomed")])
        survivors = await upload_ok(client, w.bob, other_msg, [("s", shared), ("k", kept)])
        body_of(await client.delete(f"/api/v1/rooms/{w.room_id}", headers=w.admin.headers))
        rows = [await attachment_row(server, i) for i in doomed]
        contents = [(await download(client, w.bob, i)).content for i in survivors]
        on_disk = stored_files(server)
        root_entries = sorted(p.name for p in files_root(server).iterdir())
    assert rows == [None, None, None]
    assert contents == [shared, kept]
    assert on_disk == sorted(content_path(server, d) for d in (shared, kept))
    assert "tmp" in root_entries
