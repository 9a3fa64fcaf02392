"""TLS serving (and the Secure cookie it implies) and the 500 that leaks nothing."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import trio
import trustme

import trio_events

from .helpers import ADMIN_NAME, ADMIN_PASSWORD, TEST_TIMEOUT, make_config, serving
from .transport_helpers import closed_after, request_head

MARGIN = 1.0  # scheduling slack on a loaded machine


def tls_config(tmp_path: Path, **server: object) -> tuple[trio_events.Config, ssl.SSLContext]:
    """A config serving TLS with a fresh certificate, and a client context that trusts it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    server = {"certfile": str(certfile), "keyfile": str(keyfile), **server}
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return make_config(tmp_path, server=server), context


async def test_tls_serves_https_and_marks_the_cookie_secure(tmp_path: Path) -> None:
    config, context = tls_config(tmp_path)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio_events.open_server(config) as running:
            assert running.url.startswith("https://")
            async with httpx.AsyncClient(base_url=running.url, verify=context) as client:
                assert (await client.get("/healthz")).status_code == 200
                response = await client.post(
                    "/api/v1/login", json={"userName": ADMIN_NAME, "password": ADMIN_PASSWORD}
                )
                assert response.status_code == 200
                cookie = response.headers["set-cookie"]
                assert "Secure" in cookie
                assert "HttpOnly" in cookie

            # a client that does not trust the certificate cannot talk to it
            async with httpx.AsyncClient(base_url=running.url) as untrusting:
                with pytest.raises(httpx.ConnectError):
                    await untrusting.get("/healthz")


@pytest.mark.parametrize(
    "sent",
    [b"", b"\x16\x03\x01", None],
    ids=["nothing", "partial-client-hello", "handshake-but-no-head"],
)
async def test_a_tls_client_that_never_sends_its_head_is_cut_at_header_timeout(
    tmp_path: Path, sent: bytes | None
) -> None:
    """``server.header_timeout`` bounds the TLS handshake and the first request
    head together (hypercorn would give a handshake 60 s on its own)."""
    header_timeout = 1.0
    config, context = tls_config(tmp_path, header_timeout=header_timeout)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio_events.open_server(config) as running:
            started = trio.current_time()
            stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", running.port)
            async with stream:
                if sent is None:
                    stream = trio.SSLStream(stream, context, server_hostname="127.0.0.1")
                    await stream.do_handshake()
                elif sent:
                    await stream.send_all(sent)
                with trio.move_on_after(header_timeout + 2 * MARGIN):
                    await closed_after(stream)
                elapsed = trio.current_time() - started
            assert elapsed < header_timeout + MARGIN, (
                f"a TLS client that sent {sent!r} was held {elapsed:.2f}s"
                f" (header_timeout={header_timeout})"
            )
            # and a real client is still served
            async with await trio.open_tcp_stream("127.0.0.1", running.port) as tcp:
                tls = trio.SSLStream(
                    tcp, context, server_hostname="127.0.0.1", https_compatible=True
                )
                await tls.send_all(request_head("/healthz", [("Connection", "close")]))
                answer = b""
                while chunk := await tls.receive_some():
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:100]


async def test_cookie_not_secure_over_plain_http(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (_, client):
            response = await client.post(
                "/api/v1/login", json={"userName": ADMIN_NAME, "password": ADMIN_PASSWORD}
            )
            assert "Secure" not in response.headers["set-cookie"]


async def test_cookie_secure_when_configured(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path, auth={"cookie_secure": True})) as (_, client):
            response = await client.post(
                "/api/v1/login", json={"userName": ADMIN_NAME, "password": ADMIN_PASSWORD}
            )
            assert "Secure" in response.headers["set-cookie"]


async def test_unexpected_exception_is_a_bare_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(make_config(tmp_path)) as (running, client):
            response = await client.post(
                "/api/v1/login", json={"userName": ADMIN_NAME, "password": ADMIN_PASSWORD}
            )
            assert response.status_code == 200

            async def broken() -> list[object]:
                raise RuntimeError("secret internals: /etc/shadow")

            running.services.users.list_users = broken  # type: ignore[method-assign, assignment]
            response = await client.get("/api/v1/users")
            assert response.status_code == 500
            assert response.json() == {
                "errorText": "Internal server error",
                "httpStatusCode": 500,
            }
            assert "secret" not in response.text
            # ... while the log keeps the traceback for the operator
            assert "RuntimeError: secret internals" in caplog.text
            # the server keeps serving
            assert (await client.get("/healthz")).status_code == 200
