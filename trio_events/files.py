"""Attachment bytes on disk, named by their SHA-256, never by a client's name.

Layout under ``<data_dir>/files``: ``tmp/<process>/`` for uploads in
progress (each process its own directory, so processes sharing the data
directory never touch each other's uploads) and ``ab/cd/abcd...`` for stored
content.  An upload is streamed into a temporary
file, hashed on the way, flushed to disk (``fsync``), and renamed into place
inside the write transaction that records it (so placing and removing files
are serialized with every other write, also across processes sharing the
data directory); the directory is synced after the rename, so a committed
row never refers to bytes that a power loss can take away.  Identical
content is stored once.  A file is removed when the last attachment that
refers to it is gone, after that deletion committed.

A crash between placing a file and committing its row, or between
committing a deletion and removing the file, leaves a file no row refers
to; :meth:`FileStore.stale_content` and :meth:`FileStore.remove_orphan` let
the start-up sweep (:meth:`AttachmentService.prepare
<trio_events.services.attachments.AttachmentService.prepare>`) find and
remove those once they are older than a grace period.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import BinaryIO

import attrs
import trio

__all__ = ["DEPLOYMENT_MARKER", "STALE_TEMP", "FileStore", "Upload"]

# An upload in progress writes its temporary file at least every
# ``server.request_timeout`` (or is refused), and is placed within a storage
# wait of its last write: a temporary entry untouched this long is a leftover.
STALE_TEMP = 3600.0
# Names the deployment (database) whose files these are: see FileStore.claim.
DEPLOYMENT_MARKER = ".deployment"


@attrs.define
class Upload:
    """A file received into a temporary path, with what was learnt on the way.

    The temporary file is open between :meth:`open` and :meth:`close`; file
    I/O runs in worker threads so a slow disk never blocks the event loop.
    """

    temp_path: Path
    file_name: str
    size: int = 0
    sha1: hashlib._Hash = attrs.field(factory=hashlib.sha1)
    sha256: hashlib._Hash = attrs.field(factory=hashlib.sha256)
    synced: bool = False
    _file: BinaryIO | None = None

    async def open(self) -> None:
        self._file = await trio.to_thread.run_sync(self._open)

    def _open(self) -> BinaryIO:
        try:
            return self.temp_path.open("wb")
        except FileNotFoundError:  # swept by another process after a long idle spell
            self.temp_path.parent.mkdir(parents=True, exist_ok=True)
            return self.temp_path.open("wb")

    async def write(self, data: bytes) -> None:
        """Append ``data`` to the open temporary file and hash it."""
        if self._file is None:
            raise ValueError("the upload is not open")
        self.size += len(data)
        self.sha1.update(data)
        self.sha256.update(data)
        await trio.to_thread.run_sync(self._file.write, data)

    async def finish(self) -> None:
        """All bytes are in: flush them to disk and close the file.  Only a
        finished upload may be placed (see :meth:`FileStore.place`)."""
        if self._file is None:
            raise ValueError("the upload is not open")
        file, self._file = self._file, None
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_sync_and_close, file)
        self.synced = True

    async def close(self) -> None:
        """Close the temporary file of an abandoned upload (a no-op if it is
        not open); never cancelled half-way, so no descriptor leaks."""
        if self._file is None:
            return
        file, self._file = self._file, None
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(file.close)

    @property
    def checksum(self) -> str:
        return self.sha1.hexdigest()

    @property
    def content_hash(self) -> str:
        return self.sha256.hexdigest()


def _sync_and_close(file: BinaryIO) -> None:
    try:
        file.flush()
        os.fsync(file.fileno())
    finally:
        file.close()


def _sync_dir(path: Path) -> None:
    """Make the entries of ``path`` (a rename, a new file or directory) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_hex(name: str, length: int) -> bool:
    return len(name) == length and all(c in "0123456789abcdef" for c in name)


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp" / f"{os.getpid()}-{secrets.token_hex(4)}"

    def prepare(self) -> None:
        """Create this process's temporary directory; remove temporary entries
        (other processes' directories, files of older versions) untouched for
        ``STALE_TEMP``: uploads cut short by a crash.  Entries in use by a
        running process are fresher than that and stay."""
        temp_root = self.tmp.parent
        temp_root.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - STALE_TEMP
        for entry in temp_root.iterdir():
            if entry != self.tmp and _newest_change(entry) < cutoff:
                _remove_tree(entry)
        self.tmp.mkdir(exist_ok=True)

    def new_temp(self) -> Path:
        return self.tmp / f"upload-{secrets.token_hex(8)}"

    def claim(self, deployment_id: int) -> bool:
        """Whether this directory holds the files of deployment ``deployment_id``.

        The first process to see the directory writes the id into
        ``DEPLOYMENT_MARKER``; a directory marked with another id belongs to
        another database (a process started with a wrong URL, or on an empty
        database), whose rows say nothing about these files.
        """
        marker = self.root / DEPLOYMENT_MARKER
        try:
            return int(marker.read_text().strip()) == deployment_id
        except FileNotFoundError:
            self.root.mkdir(parents=True, exist_ok=True)
            temp = marker.with_name(f"{marker.name}.{os.getpid()}")
            temp.write_text(f"{deployment_id}\n")
            os.replace(temp, marker)
            _sync_dir(self.root)
            return True
        except ValueError:  # not a number: not ours to judge
            return False

    def path(self, content_hash: str) -> Path:
        if not _is_hex(content_hash, 64):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / content_hash[:2] / content_hash[2:4] / content_hash

    def place(self, upload: Upload) -> None:
        """Move a finished upload into place, durably.

        A file already there under that name is replaced, not trusted: it may
        have been cut short (a power loss before it reached the disk, a full
        disk, a damaged sector), while the upload was just hashed and synced.
        The rename costs no more than checking the old file would, and it
        gives the file a fresh modification time, which keeps the orphan
        sweep of another process away from it until its row is committed.
        """
        if not upload.synced:
            raise ValueError("an upload must be finished before it is placed")
        final = self.path(upload.content_hash)
        self._make_dirs(final.parent)
        os.replace(upload.temp_path, final)
        _sync_dir(final.parent)

    def _make_dirs(self, directory: Path) -> None:
        missing = [d for d in (directory.parent, directory) if not d.is_dir()]
        directory.mkdir(parents=True, exist_ok=True)
        for created in missing:
            _sync_dir(created.parent)

    def remove(self, content_hash: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(content_hash).unlink()

    def stale_content(self, older_than: float) -> list[str]:
        """The content hashes whose files were last modified before
        ``older_than`` (a :func:`time.time` value)."""
        found: list[str] = []
        for first in _entries(self.root, 2, directories=True):
            for second in _entries(first, 2, directories=True):
                for content in _entries(second, 64, directories=False):
                    name = content.name
                    if name[:4] == first.name + second.name and _mtime(content) < older_than:
                        found.append(name)
        return found

    def remove_orphan(self, content_hash: str, older_than: float) -> bool:
        """Remove a file no row refers to, unless it was modified since
        ``older_than`` (placed again meanwhile); then its directories if empty."""
        path = self.path(content_hash)
        try:
            if path.stat().st_mtime >= older_than:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        for directory in (path.parent, path.parent.parent):
            with contextlib.suppress(OSError):  # not empty: another file lives there
                directory.rmdir()
        return True

    @staticmethod
    def discard(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _entries(parent: Path, length: int, *, directories: bool) -> list[Path]:
    """The directories (or regular files) in ``parent`` named by ``length``
    hex digits; nothing if ``parent`` is gone."""
    try:
        with os.scandir(parent) as entries:
            return [
                Path(entry.path)
                for entry in entries
                if _is_hex(entry.name, length)
                and (
                    entry.is_dir(follow_symlinks=False)
                    if directories
                    else entry.is_file(follow_symlinks=False)
                )
            ]
    except FileNotFoundError:
        return []


def _newest_change(entry: Path) -> float:
    """The latest modification time of ``entry`` and, for a directory, of
    what it holds."""
    newest = _mtime(entry)
    if entry.is_dir() and not entry.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            newest = max([newest, *(_mtime(child) for child in entry.iterdir())])
    return newest


def _remove_tree(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            entry.unlink()


def _mtime(path: Path) -> float:
    try:
        return path.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return float("inf")  # gone meanwhile: nothing to sweep
