"""The single-file build: scripts/build-zipapp makes a zipapp that serves on a
machine with only Python installed.

The built file runs under a bare virtual environment (no packages at all, and
``-I``: no PYTHONPATH, no user site), so everything it serves, the console's
static files and the contract documents included, must come from the file.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from .helpers import fixed_port, healthy, reap

REPO = Path(__file__).resolve().parent.parent
ADMIN_LINE = re.compile(rb"created the first administrator user=admin password=(\S+)")


async def bare_python(where: Path) -> Path:
    """A Python of the same version with nothing installed, checked to lack
    what the project needs."""
    with trio.fail_after(60):
        await trio.run_process(
            [sys.executable, "-m", "venv", "--without-pip", str(where)], capture_stdout=True
        )
    python = where / "bin" / "python"
    for module in ("quart", "trio", "trio_events"):
        probe = await trio.run_process(
            [str(python), "-I", "-c", f"import {module}"],
            capture_stderr=True,
            check=False,
            env=plain_env(where),
        )
        assert probe.returncode != 0, f"{python} can import {module}"
    return python


def plain_env(tmp_path: Path) -> dict[str, str]:
    """An environment with nothing of the test run's: no PYTHONPATH, no venv."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SHIV_ROOT": str(tmp_path / "shiv-root"),
        "LANG": "C.UTF-8",
    }


def copy_sources(names: list[str], dest: Path) -> None:
    for name in names:
        source = REPO / name
        if source.is_file():  # not a tracked file deleted in the worktree
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    if (REPO / ".venv").exists():  # build-zipapp runs shiv from it
        (dest / ".venv").symlink_to(REPO / ".venv")


async def build(pyz: Path, tmp_path: Path) -> None:
    """Build from a copy of the files git sees (tracked or new, not ignored): a
    stale build/ directory in the checkout would otherwise be packaged too,
    hiding a file the package fails to ship, and the checkout stays untouched."""
    listed = await trio.run_process(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_stdout=True,
    )
    source = tmp_path / "source"
    names = [name for name in listed.stdout.decode().split("\0") if name]
    await trio.to_thread.run_sync(copy_sources, names, source)
    env = {**os.environ, "SHIV_ROOT": str(tmp_path / "shiv-root")}
    env.pop("PYTHONPATH", None)
    with trio.fail_after(300):
        built = await trio.run_process(
            ["bash", str(source / "scripts" / "build-zipapp"), str(pyz)],
            cwd=source,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert built.returncode == 0, built.stderr.decode()[-2000:]
    assert (await trio.Path(pyz).stat()).st_size > 100_000


async def check_served(port: int, password: str) -> None:
    """The console, the contract documents, metrics and a login, from the file."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        index = await client.get("/")
        assert index.status_code == 200
        assert 'id="connection-state"' in index.text
        script = await client.get("/static/app.js")
        assert script.status_code == 200
        assert "api/v1" in script.text
        for name, first_line in [
            ("openapi.yaml", "openapi: 3.1"),
            ("events.asyncapi.yaml", "asyncapi: 3.0"),
        ]:
            document = await client.get(f"/api/v1/docs/{name}")
            assert document.status_code == 200, name
            assert first_line in document.text[:200], name
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "trio_events_open_streams" in metrics.text
        login = await client.post("/api/v1/login", json={"userName": "admin", "password": password})
        assert login.status_code == 200, login.text
        status = await client.get("/api/v1/status")
        assert status.status_code == 200, status.text
        assert status.json()["userId"] == login.json()["userId"]


@pytest.mark.slow
async def test_zipapp_serves_with_only_python_installed(tmp_path: Path) -> None:
    pyz = tmp_path / "trio-events.pyz"
    await build(pyz, tmp_path)
    python = await bare_python(tmp_path / "bare")

    port = fixed_port()
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [str(python), "-I", str(pyz), "serve", "--port", str(port), "--data-dir", str(data)],
            cwd=tmp_path,  # no config.toml here: the zipapp runs on its defaults
            env=plain_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            with trio.fail_after(60):
                while not await healthy(port):
                    assert process.poll() is None, log.read_text()
                    await trio.sleep(0.2)
            found = ADMIN_LINE.search(log.read_bytes())
            assert found, log.read_text()
            with trio.fail_after(30):
                await check_served(port, found.group(1).decode())
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                code = await process.wait()
        finally:
            await reap(process)
    err = log.read_text()
    assert code == 0, err[-2000:]
    assert (data / "trio_events.sqlite3").exists()
