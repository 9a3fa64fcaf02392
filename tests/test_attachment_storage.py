"""Uploads against slow or failing storage: memory stays bounded while a body
streams to disk, and what is on disk stays consistent with the rows.

The memory check does not trust the server's own flow control: an outer ASGI
wrapper counts the body bytes handed to the app, a wrapped ``Upload.write``
counts the bytes written to temporary files, and the difference (what sits
in memory between the two) must stay small while storage is slow.
"""

from __future__ import annotations

import gc
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, Scope
from quart_trio import QuartTrio

import trio_events
import trio_events.api
import trio_events.server
from trio_events.files import STALE_TEMP, Upload
from trio_events.services import Services
from trio_events.services.attachments import ORPHAN_GRACE

from .attachment_helpers import (
    BOUNDARY,
    content_path,
    download,
    file_part,
    files_root,
    metadata,
    multipart,
    pattern,
    raw_body,
    sha1,
    sha256,
    stored_files,
    temp_files,
    upload_ok,
    upload_raw,
    world,
)
from .helpers import TEST_TIMEOUT, assert_error, make_config, serving
from .rest_helpers import body_of, create_room, post

MIB = 1 << 20
SLOW_WRITE = 0.002  # seconds per write: storage at roughly 30 MB/s
LARGEST_ALLOWED_GAP = 3 * MIB
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"

AsgiApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Coroutine[Any, Any, None]]


@attrs.define
class BodyMeter:
    """Body bytes handed to the app and written to temporary files."""

    received: int = 0
    written: int = 0
    largest_gap: int = 0

    def note(self) -> None:
        self.largest_gap = max(self.largest_gap, self.received - self.written)


def counting(app: AsgiApp, meter: BodyMeter) -> AsgiApp:
    async def asgi_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        async def counted() -> ASGIReceiveEvent:
            message = await receive()
            if message["type"] == "http.request":
                meter.received += len(message.get("body", b""))
                meter.note()
            return message

        await app(scope, counted, send)

    return asgi_app


@pytest.fixture
def meter(monkeypatch: pytest.MonkeyPatch) -> BodyMeter:
    """Count body bytes outside the server's flow control, and slow storage down."""
    meter = BodyMeter()
    create_app = trio_events.api.create_app
    write = Upload.write

    def metered_app(svc: Services) -> QuartTrio:
        app = create_app(svc)
        app.asgi_app = counting(app.asgi_app, meter)  # type: ignore[method-assign,assignment]
        return app

    async def slow_write(self: Upload, data: bytes) -> None:
        await trio.sleep(SLOW_WRITE)
        await write(self, data)
        meter.written += len(data)
        meter.note()

    monkeypatch.setattr(trio_events.server, "create_app", metered_app)
    monkeypatch.setattr(Upload, "write", slow_write)
    return meter


async def test_a_large_upload_to_slow_storage_is_not_buffered_in_memory(
    meter: BodyMeter, client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    data = pattern(24 * MIB, 11)
    with trio.fail_after(TEST_TIMEOUT * 2):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        (attachment_id,) = await upload_ok(client, w.alice, message_id, [("big.bin", data)])
        found = await metadata(client, w.alice, attachment_id)
        on_disk = stored_files(server)
        leftovers = temp_files(server)
    assert meter.written == len(data)
    assert meter.received > len(data)  # the multipart framing too
    assert meter.largest_gap <= LARGEST_ALLOWED_GAP, f"{meter.largest_gap / MIB:.1f} MiB held"
    assert found["fileChecksum"] == sha1(data)
    assert found["fileSize"] == len(data)
    assert on_disk == [content_path(server, data)]
    assert leftovers == []


@pytest.mark.parametrize("chunked", [False, True])
# The client gives up sending once the server closes; httpx then abandons
# its request-body generator (the un-chunked one is ignored in pyproject).
@pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx._content.AsyncIteratorByteStream.__aiter__'"
    " was garbage collected:ResourceWarning"
)
async def test_an_answer_without_reading_the_body_does_not_hang(
    client: httpx.AsyncClient, server: trio_events.RunningServer, chunked: bool
) -> None:
    """A stranger's upload is refused before its body is read, so the window
    stops receiving long before the body ends: the answer still arrives,
    says the connection closes, and the client's next request is served."""
    body = raw_body(file_part(b"big.bin", pattern(12 * MIB, 12)))
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        private = await create_room(client, w.admin, "closed", "Private")
        message_id = await post(client, w.admin, private)
        refused = await upload_raw(client, w.alice, message_id, body, chunked=chunked)
        after = await client.get("/api/v1/status", headers=w.alice.headers)
        leftovers = temp_files(server)
    gc.collect()  # the abandoned generator warns now, under this test's filter
    assert_error(refused, 404)
    assert refused.headers["connection"] == "close"
    assert after.status_code == 200
    assert leftovers == []


@attrs.frozen
class Synced:
    inode: int
    is_dir: bool
    names: tuple[str, ...]  # what the directory held, or where the file was


def record_fsyncs(monkeypatch: pytest.MonkeyPatch, files: Path) -> list[Synced]:
    synced: list[Synced] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            names = tuple(sorted(os.listdir(fd)))
        else:
            names = tuple(str(p) for p in files.rglob("*") if p.stat().st_ino == info.st_ino)
        synced.append(Synced(info.st_ino, stat.S_ISDIR(info.st_mode), names))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return synced


async def test_a_file_reaches_the_disk_before_its_row_refers_to_it(
    monkeypatch: pytest.MonkeyPatch, client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    data = pattern(300_000, 13)
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        synced = record_fsyncs(monkeypatch, files_root(server))
        await upload_ok(client, w.alice, message_id, [("synced.bin", data)])
    final = content_path(server, data)
    (file_sync,) = [s for s in synced if s.inode == final.stat().st_ino]
    assert not file_sync.is_dir
    assert len(file_sync.names) == 1
    assert Path(file_sync.names[0]).relative_to(files_root(server)).parts[0] == "tmp"
    dir_syncs = [s for s in synced if s.inode == final.parent.stat().st_ino]
    assert dir_syncs, "the directory was not synced after the rename"
    assert final.name in dir_syncs[-1].names
    assert synced.index(file_sync) < synced.index(dir_syncs[-1])


async def test_a_damaged_stored_file_is_replaced_by_the_next_upload(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> None:
    data = pattern(200_000, 14)
    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        first = await post(client, w.alice, w.room_id)
        (a,) = await upload_ok(client, w.alice, first, [("a.bin", data)])
        stored = content_path(server, data)
        stored.write_bytes(data[:1000])  # cut short, as by a power loss
        second = await post(client, w.alice, w.room_id)
        (b,) = await upload_ok(client, w.alice, second, [("b.bin", data)])
        contents = [(await download(client, w.alice, i)).content for i in (a, b)]
    assert stored.read_bytes() == data
    assert contents == [data, data]


def plant(root: Path, data: bytes, age: float) -> Path:
    """A content file nobody recorded, last modified ``age`` seconds ago."""
    digest = sha256(data)
    path = root / digest[:2] / digest[2:4] / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def make_old(path: Path) -> None:
    when = time.time() - 2 * ORPHAN_GRACE
    os.utime(path, (when, when))


async def test_start_up_sweeps_old_files_no_attachment_refers_to(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    kept = b"an attachment"
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (server, client):
            w = await world(client, server)
            message_id = await post(client, w.alice, w.room_id)
            (attachment_id,) = await upload_ok(client, w.alice, message_id, [("k.txt", kept)])
        root = files_root(server)
        make_old(content_path(server, kept))
        old_orphan = plant(root, b"left by a crash", 2 * ORPHAN_GRACE)
        young_orphan = plant(root, b"placed by another process just now", 60)
        async with serving(config) as (server, client):
            fetched = await download(client, w.alice, attachment_id)
    assert fetched.content == kept
    assert not old_orphan.exists()
    assert not old_orphan.parent.exists(), "its emptied directory was left"
    assert young_orphan.exists()
    assert content_path(server, kept).exists()


async def test_sweep_refuses_a_data_directory_no_row_refers_to(tmp_path: Path) -> None:
    """Many old files and not one referred to: most likely a worker started
    on the wrong (empty) database; removing them would lose every file."""
    planted = [plant(tmp_path / "files", f"file {i}".encode(), 2 * ORPHAN_GRACE) for i in range(12)]
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)):
            pass
    assert all(path.exists() for path in planted)


async def test_a_process_on_another_database_sweeps_nothing(tmp_path: Path) -> None:
    """A process started on another database (a wrong URL, an empty one) with
    this data directory: none of its rows refer to our files, so its sweep
    would remove them all; the directory's deployment marker stops it."""
    ours = make_config(tmp_path)
    other = make_config(tmp_path, storage={"path": str(tmp_path / "another.sqlite3")})
    kept = b"an attachment of the first database"
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(ours) as (server, client):
            w = await world(client, server)
            message_id = await post(client, w.alice, w.room_id)
            (attachment_id,) = await upload_ok(client, w.alice, message_id, [("k.txt", kept)])
        stored = content_path(server, kept)
        make_old(stored)
        async with serving(other):
            pass
        assert stored.exists(), "the other database's sweep removed our file"
        async with serving(ours) as (server, client):
            fetched = await download(client, w.alice, attachment_id)
    assert fetched.content == kept


async def test_a_second_process_leaves_the_first_ones_upload_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two processes share a data directory (README's cluster example): one
    starting while the other receives an upload must not remove its file."""
    config = make_config(tmp_path)
    data = pattern(2 * MIB, 15)
    body = raw_body(file_part(b"slow.bin", data))
    writing, resume = trio.Event(), trio.Event()
    write = Upload.write

    async def noting(self: Upload, piece: bytes) -> None:
        await write(self, piece)
        writing.set()

    async def stalled() -> AsyncIterator[bytes]:
        yield body[: len(body) // 2]
        await resume.wait()
        yield body[len(body) // 2 :]

    monkeypatch.setattr(Upload, "write", noting)
    responses: list[httpx.Response] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(config) as (first, client):
            w = await world(client, first)
            message_id = await post(client, w.alice, w.room_id)

            async def send() -> None:
                responses.append(
                    await client.post(
                        f"/api/v1/messages/{message_id}/attachments",
                        content=stalled(),
                        headers={**w.alice.headers, "Content-Type": MULTIPART},
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await writing.wait()
                async with serving(config):
                    pass  # the second process started (and stopped) meanwhile
                resume.set()
            (attachment_id,) = body_of(responses[0])["attachmentIds"]
            fetched = await download(client, w.alice, attachment_id)
            leftovers = temp_files(first)
    assert fetched.content == data
    assert leftovers == []


def age(path: Path, seconds: float) -> Path:
    when = time.time() - seconds
    os.utime(path, (when, when))
    return path


async def test_start_up_removes_only_stale_temporary_entries(tmp_path: Path) -> None:
    tmp = tmp_path / "files" / "tmp"
    (tmp / "4242-dead").mkdir(parents=True)
    (tmp / "4242-dead" / "upload-1").touch()  # a crashed process's upload
    age(tmp / "4242-dead" / "upload-1", 2 * STALE_TEMP)
    age(tmp / "4242-dead", 2 * STALE_TEMP)
    (tmp / "upload-from-an-older-version").touch()
    age(tmp / "upload-from-an-older-version", 2 * STALE_TEMP)
    (tmp / "77-busy").mkdir()
    (tmp / "77-busy" / "upload-2").touch()  # being written right now
    age(tmp / "77-busy", 2 * STALE_TEMP)
    (tmp / "78-idle").mkdir()  # a running process between uploads
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (server, _):
            own = server.services.attachments.files.tmp
            entries = sorted(p.name for p in tmp.iterdir())
    assert entries == sorted(["77-busy", "78-idle", own.name])
    assert (tmp / "77-busy" / "upload-2").exists()


async def test_a_value_error_of_ours_is_a_500_not_a_malformed_body(
    monkeypatch: pytest.MonkeyPatch,
    client: httpx.AsyncClient,
    server: trio_events.RunningServer,
) -> None:
    """Only the multipart decoder's ValueError means the client sent a bad body."""

    async def broken(self: Upload, piece: bytes) -> None:
        raise ValueError("a bug in the server")

    with trio.fail_after(TEST_TIMEOUT):
        w = await world(client, server)
        message_id = await post(client, w.alice, w.room_id)
        monkeypatch.setattr(Upload, "write", broken)
        response = await client.post(
            f"/api/v1/messages/{message_id}/attachments",
            files=multipart([("a.txt", b"some bytes")]),
            headers=w.alice.headers,
        )
    assert_error(response, 500)
    assert "a bug" not in response.text
