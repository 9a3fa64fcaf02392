"""Run the server: the store, the services and hypercorn, in one nursery.

``open_server`` is the embedding API: a Trio program opens the whole server
inside its own task tree and gets its address back once it really listens.
``serve`` is ``open_server`` plus waiting for a shutdown request; the CLI
feeds it SIGINT/SIGTERM.

Ownership: the ``open_store`` block owns the database connections; the nursery
inside it owns hypercorn's task, which owns every connection's task.  Leaving
the block asks hypercorn to stop (it stops accepting, gives open requests
``graceful_timeout`` seconds, then cancels them), and only then closes the
store, so no request outlives the connections it uses.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio
from hypercorn.config import Config as HypercornConfig

from .api import create_app
from .config import Config
from .connection import CLOSE_TIMEOUT
from .retention import run_retention
from .services import Services
from .services.bootstrap import ensure_admin
from .store import open_store
from .transport import serve_http

__all__ = ["RunningServer", "open_server", "serve"]

log = logging.getLogger("trio_events.server")


@attrs.frozen
class RunningServer:
    """A server that is listening: its addresses and its services."""

    urls: list[str]
    services: Services

    @property
    def url(self) -> str:
        return self.urls[0]

    async def publish(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        room_id: int | None = None,
        user_ids: Collection[int] | None = None,
    ) -> int:
        """Append an application event to the log; return its event id.

        It travels like every other event: durable, in commit order, to the
        users who may access ``room_id`` (or exactly ``user_ids``), on their
        streams as ``{"type": event_type, "data": data, "eventId": N}``.
        """
        return await self.services.publish(event_type, data, room_id=room_id, user_ids=user_ids)

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port


def hypercorn_config(config: Config) -> HypercornConfig:
    server = config.server
    hc = HypercornConfig()
    host = f"[{server.host}]" if ":" in server.host else server.host
    hc.bind = [f"{host}:{server.port}"]
    if server.tls:
        hc.certfile = server.certfile
        hc.keyfile = server.keyfile
    hc.accesslog = None  # the app logs one line per request itself
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = server.graceful_timeout
    hc.keep_alive_timeout = server.keep_alive_timeout
    hc.include_server_header = False
    hc.websocket_max_message_size = config.events.max_client_frame
    hc.websocket_ping_interval = config.events.heartbeat_interval  # the ASGI fallback route
    hc.h11_max_incomplete_size = server.max_header_bytes
    # the transport bounds the handshake and the first head together by this
    hc.ssl_handshake_timeout = server.header_timeout
    hc.keep_alive_max_requests = server.keep_alive_max_requests
    return hc


def ssl_context(config: Config) -> ssl.SSLContext | None:
    """TLS for the listener, offering only HTTP/1.1 so event streams stay on it."""
    if not config.server.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.server.certfile, config.server.keyfile)
    context.set_alpn_protocols(["http/1.1"])
    return context


@contextlib.asynccontextmanager
async def open_server(
    config: Config, *, listen_fds: Sequence[int] = ()
) -> AsyncIterator[RunningServer]:
    """Start the whole server; yield once it accepts connections; stop on exit.

    However the block is left (at its end, by an exception, or cancelled by
    the embedding program, as Ctrl-C does), the shutdown is the same: every
    stream gets what was queued for it, then a 1001 close, while hypercorn
    gives open requests ``graceful_timeout`` seconds.  The connections are
    shielded from the caller's cancellation for that, and the whole shutdown
    is bounded (``graceful_timeout`` plus ``CLOSE_TIMEOUT``).

    ``listen_fds``: accept on these inherited listening sockets (a worker of
    ``serve --workers``) instead of binding ``server.host``/``server.port``.
    """
    async with open_store(config) as store:
        svc = Services.build(config, store)
        await svc.attachments.prepare()
        password = await ensure_admin(svc)
        if password:
            log.warning(
                "created the first administrator user=%s password=%s"
                " (shown once: change it with `trio-events user passwd`)",
                config.bootstrap.admin_user,
                password,
            )
        app = create_app(svc)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(svc.broker.run)
            if svc.bus is not None:
                await nursery.start(svc.bus.run)
            await nursery.start(run_retention, store, config.events)
            async with trio.open_nursery() as http:
                connections = trio.CancelScope(shield=True)
                try:
                    urls: list[str] = await http.start(
                        partial(
                            _shielded,
                            connections,
                            partial(
                                serve_http,
                                app,
                                svc,
                                hypercorn_config(config),
                                ssl_context(config),
                                shutdown.wait,
                                listen_fds=listen_fds,
                            ),
                        )
                    )
                    log.info("listening urls=%s data=%s", ",".join(urls), config.data_dir)
                    yield RunningServer(urls=urls, services=svc)
                finally:
                    # Streams drain their queues and close with 1001 while
                    # hypercorn stops accepting and waits graceful_timeout.
                    svc.broker.close_all(1001, "server shutting down")
                    shutdown.set()
                    connections.deadline = (
                        trio.current_time() + config.server.graceful_timeout + CLOSE_TIMEOUT
                    )
            nursery.cancel_scope.cancel()  # the broker, once no stream is left
        log.info("stopped")


async def _shielded(
    scope: trio.CancelScope,
    run: Callable[..., Awaitable[None]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``run`` inside ``scope``, which shields it from outer cancellation:
    when the embedding program cancels ``open_server``, the connections still
    shut down gracefully (``scope``'s deadline bounds that)."""
    with scope:
        await run(task_status=task_status)


async def serve(
    config: Config,
    shutdown: trio.Event,
    *,
    listen_fds: Sequence[int] = (),
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set; report the running server when ready."""
    async with open_server(config, listen_fds=listen_fds) as server:
        task_status.started(server)
        await shutdown.wait()
        log.info("shutting down")
