"""``trio-events tail``: print a user's live event stream, one JSON object per line.

A small client for operators and for people learning the API: it logs in
over HTTP (or uses a Web API token), opens ``/api/v1/events`` with
trio-websocket, and writes every frame it receives to stdout as it arrives.
It ends when the server closes the stream, reporting the close code on
stderr (exit status 0 for a normal close or Ctrl-C, 1 otherwise).
"""

from __future__ import annotations

import sys
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

__all__ = ["TailError", "events_url", "tail"]

LOGIN_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0


class TailError(Exception):
    """A failure to report in one line."""


def events_url(base_url: str) -> str:
    """``http(s)://host:port`` -> ``ws(s)://host:port/api/v1/events``."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise TailError(f"not an http(s) URL: {base_url!r}")
    scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
    return urlunsplit((scheme, parts.netloc, "/api/v1/events", "", ""))


async def _login(base_url: str, user: str, password: str) -> str:
    with trio.fail_after(LOGIN_TIMEOUT):
        async with httpx.AsyncClient(base_url=base_url) as client:
            try:
                response = await client.post(
                    "/api/v1/login", json={"userName": user, "password": password}
                )
            except httpx.HTTPError as exc:
                raise TailError(f"cannot reach {base_url}: {exc}") from None
    if response.status_code != 200:
        try:
            text = response.json().get("errorText", response.text)
        except ValueError:
            text = response.text
        raise TailError(f"login failed ({response.status_code}): {text}")
    return str(response.json()["userSessionId"])


async def tail(
    base_url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print the stream until it closes; return the process exit status."""
    if token:
        headers = [(b"Authorization", f"Bearer {token}".encode())]
    elif user and password is not None:
        session = await _login(base_url, user, password)
        headers = [(b"Cookie", f"VirolaUserSessionId={session}".encode())]
    else:
        raise TailError("give --user and --password, or --token")
    url = events_url(base_url)
    try:
        async with open_websocket_url(
            url, extra_headers=headers, connect_timeout=CONNECT_TIMEOUT
        ) as ws:
            return await _print_frames(ws, out)
    except ConnectionRejected as exc:
        raise TailError(f"stream refused with HTTP {exc.status_code}") from None
    except (OSError, HandshakeError) as exc:
        raise TailError(f"cannot connect to {url}: {exc}") from None


async def _print_frames(ws: WebSocketConnection, out: TextIO) -> int:
    while True:
        try:
            frame = await ws.get_message()
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason else 1006
            reason = exc.reason.reason if exc.reason else "connection lost"
            print(f"stream closed code={code} reason={reason}", file=sys.stderr)
            return 0 if code in (1000, 1001) else 1
        print(frame if isinstance(frame, str) else frame.decode(), file=out, flush=True)
