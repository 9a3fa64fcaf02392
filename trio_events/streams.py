"""What every events transport does before a stream runs: check the handshake
(credentials, ``Origin``, the per-user cap) and build the ``Hello`` frame.

Shared by the quart-trio route (:mod:`trio_events.api.events`) and the
transport that owns the socket (:mod:`trio_events.transport`), so both refuse
and greet exactly alike.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from urllib.parse import urlsplit

import attrs

from .broker import Subscriber
from .errors import Forbidden, RateLimited, Unauthorized
from .model import CredentialKind
from .replay import checked_since, plan_replay, resync_frame
from .services import Principal, Services
from .services.auth import BAD_BEARER, BAD_SESSION

__all__ = [
    "StreamStart",
    "authorize_stream",
    "bearer_from",
    "hello_frame",
    "open_stream",
    "origin_allowed",
]

SESSION_COOKIE = "VirolaUserSessionId"


def bearer_from(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header; 401 if it is malformed."""
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(BAD_BEARER)
    return token.strip()


def origin_allowed(origin: str | None, host: str | None, tls: bool, allowed: list[str]) -> bool:
    """Whether a cookie-authenticated stream from ``origin`` may open."""
    if origin is None:
        return True  # not a browser: browsers always send Origin on a WebSocket
    normalized = origin.rstrip("/").lower()
    if normalized in {a.rstrip("/").lower() for a in allowed}:
        return True
    if host is None:
        return False
    parts = urlsplit(normalized)
    own_scheme = "https" if tls else "http"
    return parts.scheme == own_scheme and parts.netloc == host.lower()


async def authorize_stream(
    svc: Services, headers: Mapping[str, str], cookies: Mapping[str, str]
) -> Principal:
    """The stream's user, or the :class:`~trio_events.errors.ApiError` that refuses it.

    ``headers`` must be looked up case-insensitively (lower-case keys).
    """
    bearer = bearer_from(headers.get("authorization"))
    principal = await svc.auth.authenticate(bearer, cookies.get(SESSION_COOKIE))
    if bearer is None and not origin_allowed(
        headers.get("origin"),
        headers.get("host"),
        svc.config.server.tls,
        svc.config.server.allowed_origins,
    ):
        raise Forbidden("Cross-origin event streams need an allowed Origin")
    if svc.broker.count_streams(principal.user_id) >= svc.config.events.max_streams_per_user:
        raise RateLimited("Too many open event streams for this user", retry_after=5)
    return principal


async def _still_valid(svc: Services, principal: Principal, routed: int) -> None:
    """401 if the credential was revoked after it was authenticated.

    Called as the stream subscribes, before any await: a revocation routed
    from then on ends the subscription (4001); one routed since ``routed``
    (the broker's position before authenticating) reached no subscriber, and
    the broker remembers it.  When the broker no longer knows, the store is
    asked again, now that a later revocation can no longer be missed.
    """
    credential = principal.credential
    revoked = svc.broker.revoked_after(principal.user_id, credential.credential_id, routed)
    if revoked is None:
        if credential.kind is CredentialKind.TOKEN:
            await svc.auth.authenticate(principal.secret, None)
        else:
            await svc.auth.authenticate(None, principal.secret)
    elif revoked:
        raise Unauthorized(BAD_BEARER if credential.kind is CredentialKind.TOKEN else BAD_SESSION)


def hello_frame(
    svc: Services, principal: Principal, subscriber: Subscriber, resumed: bool, replayed: int
) -> str:
    return json.dumps(
        {
            "type": "Hello",
            "data": {
                "userId": principal.user_id,
                "heartbeatInterval": svc.config.events.heartbeat_interval,
                "eventId": subscriber.hello_event_id,
                "resumed": resumed,
                "replayed": replayed,
            },
        },
        separators=(",", ":"),
    )


@attrs.frozen
class StreamStart:
    """An authorized, subscribed stream and the frames it must send first."""

    principal: Principal
    subscriber: Subscriber
    hello: str
    replay: list[str]


@contextlib.asynccontextmanager
async def open_stream(
    svc: Services,
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    since_values: Sequence[str],
) -> AsyncIterator[StreamStart]:
    """Check the handshake, subscribe, and compute a resume's replay.

    ``since_values`` are the values of each ``since`` in the query (none: no
    resume; more than one: 400, after the credentials are checked).

    Raises :class:`~trio_events.errors.ApiError` before subscribing when the
    stream must be refused (the transport answers with that HTTP error).
    The subscription is taken before the replay is read, so events committed
    meanwhile queue up live and come right after the replayed ones.
    """
    broker = svc.broker
    routed = broker.last_event_id  # every revocation up to here, authentication sees
    principal = await authorize_stream(svc, headers, cookies)  # 401 before anything else
    del headers, cookies  # this frame lives as long as the stream: keep nothing big
    since = await checked_since(svc, since_values)
    credential = principal.credential.credential_id
    with broker.subscribe(principal.user_id, credential, with_acl=since is not None) as sub:
        await _still_valid(svc, principal, routed)
        frames: list[str] = []
        resumed = False
        if since is not None:
            assert sub.acl is not None
            limit = svc.config.events.max_replay
            replay = await plan_replay(
                svc.store, sub.acl, principal.user_id, since, sub.hello_event_id, limit
            )
            if replay.resync_oldest is not None:
                frames = [resync_frame(replay.resync_oldest)]
            elif replay.next_since < sub.hello_event_id:  # more than max_replay missed
                oldest = await svc.store.read(lambda tx: tx.trimmed_through()) + 1
                frames = [resync_frame(oldest)]
            else:
                frames, resumed = replay.frames, True
            svc.metrics.resumes.labels("resumed" if resumed else "resync_required").inc()
        hello = hello_frame(svc, principal, sub, resumed, len(frames) if resumed else 0)
        yield StreamStart(principal=principal, subscriber=sub, hello=hello, replay=frames)
