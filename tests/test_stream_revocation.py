"""A credential revoked while its stream's handshake is in flight.

The handshake authenticates against the store, then subscribes to the
broker.  A logout, token renewal or suspension that commits and is routed
between the two reaches no subscriber; the stream must still not open.  Each
test forces that interleaving: authentication is wrapped so that the
revocation is committed and routed before it returns.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from trio_events import broker as broker_module
from trio_events.broker import Broker
from trio_events.errors import Unauthorized
from trio_events.events import EventType
from trio_events.model import StoredEvent
from trio_events.services import Principal, Services
from trio_events.services.auth import BAD_BEARER, BAD_SESSION
from trio_events.streams import SESSION_COOKIE, open_stream

from .helpers import TEST_TIMEOUT, USER_PASSWORD, make_config, serving
from .rest_helpers import user_actors
from .stream_helpers import (
    drain,
    rejection,
    running_services,
    stream_config,
    wait_routed,
    wait_subscribers,
)

Revoke = Callable[[], Awaitable[object]]


def revoke_while_authenticating(svc: Services, revoke: Revoke) -> list[int]:
    """Make the next authentications run ``revoke`` (and wait until the broker
    routed it) just before returning; return the list that counts the calls."""
    real = svc.auth.authenticate
    calls: list[int] = []

    async def racing(bearer: str | None, cookie: str | None) -> Principal:
        principal = await real(bearer, cookie)
        calls.append(1)
        if len(calls) == 1:
            await revoke()
            await wait_routed(svc)
        return principal

    svc.auth.authenticate = racing  # type: ignore[method-assign]
    return calls


@contextlib.asynccontextmanager
async def alice_with_session(tmp_path: Path) -> AsyncIterator[tuple[Services, int, str]]:
    async with running_services(make_config(tmp_path)) as svc:
        alice = await svc.users.create_user(None, "alice", USER_PASSWORD)
        _, session = await svc.auth.login("alice", USER_PASSWORD, "test")
        await wait_routed(svc)
        yield svc, alice.user_id, session


async def refused(svc: Services, cookies: dict[str, str], headers: dict[str, str]) -> str:
    """The 401 text of a handshake that must be refused; no subscriber is left."""
    with pytest.raises(Unauthorized) as refusal:
        async with open_stream(svc, headers, cookies, ()):
            pytest.fail("the stream opened on a revoked credential")
    assert svc.broker.statistics().subscribers == 0
    return refusal.value.text


async def test_logout_during_the_handshake(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with alice_with_session(tmp_path) as (svc, _, session):
            calls = revoke_while_authenticating(svc, lambda: svc.auth.logout(session))
            assert await refused(svc, {SESSION_COOKIE: session}, {}) == BAD_SESSION
            assert calls == [1]  # known from the broker: no second look at the store


async def test_token_renewal_during_the_handshake(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with alice_with_session(tmp_path) as (svc, alice, _):
            token = await svc.auth.issue_token(alice)
            revoke_while_authenticating(svc, lambda: svc.auth.issue_token(alice))
            headers = {"authorization": f"Bearer {token}"}
            assert await refused(svc, {}, headers) == BAD_BEARER


async def test_suspension_during_the_handshake(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with alice_with_session(tmp_path) as (svc, alice, session):

            async def suspend() -> None:
                await svc.users.update_user(None, alice, {"status": "Suspended"})

            revoke_while_authenticating(svc, suspend)
            assert await refused(svc, {SESSION_COOKIE: session}, {}) == BAD_SESSION


def internal(event_id: int, event_type: EventType, data: dict[str, object]) -> StoredEvent:
    return StoredEvent(event_id, str(event_type), None, None, json.dumps(data), 0)


def suspension(event_id: int, user_id: int, active: bool) -> StoredEvent:
    data: dict[str, object] = {"userId": user_id, "isAdmin": False, "active": active}
    return internal(event_id, EventType.ACL_USER, data | {"wasAdmin": False, "wasActive": True})


def test_revoked_after_is_judged_from_the_given_position() -> None:
    broker = Broker(cast(Any, None), queue_size=4)
    ended = {"userId": 7, "credentialIds": [70, 71]}
    broker.route_many([internal(1, EventType.SESSION_ENDED, ended), suspension(2, 8, False)])
    assert broker.revoked_after(7, 70, 0) is True
    assert broker.revoked_after(7, 71, 0) is True
    assert broker.revoked_after(7, 70, 1) is False  # authenticated after: it saw the logout
    assert broker.revoked_after(7, 72, 0) is False
    assert broker.revoked_after(8, 80, 1) is True  # every credential of a suspended user
    assert broker.revoked_after(8, 80, 2) is False
    broker.route(suspension(3, 8, True))
    assert broker.revoked_after(8, 80, 0) is False  # active again: nothing to refuse


def test_revoked_after_forgets_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "REVOCATIONS_KEPT", 2)
    broker = Broker(cast(Any, None), queue_size=4)
    for event_id in (1, 2, 3):
        ended = {"userId": 7, "credentialIds": [event_id * 10]}
        broker.route(internal(event_id, EventType.SESSION_ENDED, ended))
    assert broker.revoked_after(7, 10, 0) is None  # forgotten: unknown, not "valid"
    assert broker.revoked_after(7, 20, 0) is True
    assert broker.revoked_after(7, 99, 0) is None
    assert broker.revoked_after(7, 99, 1) is False
    assert broker.revoked_after(7, 30, 2) is True


async def test_another_sessions_logout_does_not_refuse(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with alice_with_session(tmp_path) as (svc, _, session):
            _, other = await svc.auth.login("alice", USER_PASSWORD, "test")
            calls = revoke_while_authenticating(svc, lambda: svc.auth.logout(other))
            async with open_stream(svc, {}, {SESSION_COOKIE: session}, ()) as start:
                assert start.subscriber.close_code is None
            assert calls == [1]


async def test_forgotten_revocations_ask_the_store_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``REVOCATIONS_KEPT`` the broker cannot tell; the store decides."""
    monkeypatch.setattr(broker_module, "REVOCATIONS_KEPT", 0)
    with trio.fail_after(TEST_TIMEOUT):
        async with alice_with_session(tmp_path) as (svc, _, session):
            _, other = await svc.auth.login("alice", USER_PASSWORD, "test")
            calls = revoke_while_authenticating(svc, lambda: svc.auth.logout(other))
            async with open_stream(svc, {}, {SESSION_COOKIE: session}, ()) as start:
                assert start.subscriber.close_code is None
            assert calls == [1, 1]  # still valid, by a second authentication
            calls = revoke_while_authenticating(svc, lambda: svc.auth.logout(session))
            assert await refused(svc, {SESSION_COOKIE: session}, {}) == BAD_SESSION


async def test_revocation_after_subscribing_still_ends_the_stream(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            alice_with_session(tmp_path) as (svc, _, session),
            open_stream(svc, {}, {SESSION_COOKIE: session}, ()) as start,
        ):
            await svc.auth.logout(session)
            await wait_routed(svc)
            assert start.subscriber.close_code == 4001
            assert drain(start.subscriber) == []


async def test_handshake_refused_401_over_the_socket(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            (alice,) = await user_actors(client, server, "alice")
            svc = server.services
            session = alice.headers["Cookie"].split("=", 1)[1]
            revoke_while_authenticating(svc, lambda: svc.auth.logout(session))
            error = await rejection(server, list(alice.headers.items()))
            assert error.status_code == 401
            await wait_subscribers(server, 0)
