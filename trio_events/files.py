"""Attachment bytes on disk, named by their SHA-256, never by a client's name.

Layout under ``<data_dir>/files``: ``tmp/`` for uploads in progress and
``ab/cd/abcd...`` for stored content.  An upload is streamed into a temporary
file, hashed on the way, and renamed into place inside the write transaction
that records it (so placing and removing files are serialized with every
other write); identical content is stored once.  A file is removed when the
last attachment that refers to it is gone, after that deletion committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO

import attrs
import trio

__all__ = ["FileStore", "Upload"]


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
    _file: BinaryIO | None = None

    async def open(self) -> None:
        self._file = await trio.to_thread.run_sync(self.temp_path.open, "wb")

    async def write(self, data: bytes) -> None:
        """Append ``data`` to the open temporary file and hash it."""
        if self._file is None:
            raise ValueError("the upload is not open")
        self.size += len(data)
        self.sha1.update(data)
        self.sha256.update(data)
        await trio.to_thread.run_sync(self._file.write, data)

    async def close(self) -> None:
        """Close the temporary file (a no-op if it is not open); never cancelled
        half-way, so no descriptor leaks."""
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


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def prepare(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():  # uploads cut short by a crash
            with contextlib.suppress(OSError):
                leftover.unlink()

    def new_temp(self) -> Path:
        return self.tmp / f"upload-{secrets.token_hex(8)}"

    def path(self, content_hash: str) -> Path:
        if len(content_hash) != 64 or not all(c in "0123456789abcdef" for c in content_hash):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / content_hash[:2] / content_hash[2:4] / content_hash

    def place(self, upload: Upload) -> bool:
        """Move an upload into place; return False if that content was there already."""
        final = self.path(upload.content_hash)
        if final.exists():
            self.discard(upload.temp_path)
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(upload.temp_path, final)
        return True

    def remove(self, content_hash: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(content_hash).unlink()

    @staticmethod
    def discard(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
