"""The single-file build: scripts/build-zipapp makes a zipapp that serves."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from .helpers import healthy

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
async def test_zipapp_builds_and_serves(tmp_path: Path) -> None:
    pyz = tmp_path / "trio-events.pyz"
    env = {**os.environ, "SHIV_ROOT": str(tmp_path / "shiv-root")}
    env.pop("PYTHONPATH", None)
    with trio.fail_after(300):
        built = await trio.run_process(
            ["bash", str(REPO / "scripts" / "build-zipapp"), str(pyz)],
            cwd=REPO,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert built.returncode == 0, built.stderr.decode()[-2000:]
    assert pyz.stat().st_size > 100_000

    port = free_port()
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(pyz), "serve", "--port", str(port), "--data-dir", str(data)],
            cwd=tmp_path,  # no config.toml here: the zipapp runs on its defaults
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            with trio.fail_after(60):
                while not await healthy(port):
                    assert process.poll() is None, log.read_text()
                    await trio.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    err = log.read_text()
    assert code == 0, err[-2000:]
    assert "created the first administrator" in err
    assert (data / "trio_events.sqlite3").exists()
