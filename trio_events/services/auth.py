"""Logins, sessions, Web API tokens and the authentication of each request."""

from __future__ import annotations

import attrs
import trio

from .. import passwords
from ..config import AuthConfig
from ..errors import RateLimited, Unauthorized
from ..model import Credential, CredentialKind, User, now_ms
from ..store import Store, Tx
from ..throttle import Throttle
from .outbox import Outbox

__all__ = [
    "BAD_BEARER",
    "BAD_LOGIN",
    "BAD_SESSION",
    "NO_CREDENTIALS",
    "AuthService",
    "Principal",
]

NO_CREDENTIALS = "The Authorization HTTP-header or VirolaUserSessionId cookie expected"
BAD_BEARER = "Wrong Bearer, please renew Web API Access Token"
BAD_SESSION = "The user session has expired or was ended, please log in again"
BAD_LOGIN = "The username or password is invalid."
# Each address may fail this many times more often than one (name, address) pair.
ADDRESS_FACTOR = 10


@attrs.frozen
class Principal:
    """Who made a request, and with which credential."""

    user: User
    credential: Credential
    secret: str  # the presented session id or token, echoed by /status

    @property
    def user_id(self) -> int:
        return self.user.user_id


class AuthService:
    def __init__(self, store: Store, config: AuthConfig) -> None:
        self._store = store
        self._config = config
        self._per_name = Throttle(config.login_rate, config.login_window, trio.current_time)
        self._per_address = Throttle(
            config.login_rate * ADDRESS_FACTOR, config.login_window, trio.current_time
        )

    def _check_throttle(self, name_key: tuple[str, str], address: str) -> None:
        waits = [self._per_name.retry_after(name_key), self._per_address.retry_after(address)]
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None:
            raise RateLimited(
                "Too many failed login attempts, try again later", retry_after=int(wait) + 1
            )

    async def login(self, user_name: str, password: str, address: str) -> tuple[User, str]:
        """Check the password and open a session; return the user and the session id."""
        name_key = (user_name.casefold(), address)
        self._check_throttle(name_key, address)

        def lookup(tx: Tx) -> tuple[User | None, str | None]:
            user = tx.get_user_by_name(user_name)
            return user, tx.get_password_hash(user.user_id) if user else None

        user, stored_hash = await self._store.read(lookup)
        if user is None or not await passwords.verify_password(stored_hash, password):
            self._per_name.record_failure(name_key)
            self._per_address.record_failure(address)
            raise Unauthorized(BAD_LOGIN)
        if not user.is_active:
            raise Unauthorized("This account is not active")
        self._per_name.reset(name_key)
        secret = passwords.new_secret()
        now = now_ms()
        expires = now + int(self._config.session_ttl * 1000)

        def open_session(tx: Tx) -> None:
            tx.delete_expired_credentials(now)
            tx.insert_credential(
                user.user_id, CredentialKind.SESSION, passwords.hash_secret(secret), now, expires
            )

        await self._store.write(open_session)
        return user, secret

    async def authenticate(self, bearer: str | None, cookie: str | None) -> Principal:
        """Resolve the request's credential, preferring an Authorization header."""
        if bearer is not None:
            kind, secret, failure = CredentialKind.TOKEN, bearer, BAD_BEARER
        elif cookie:
            kind, secret, failure = CredentialKind.SESSION, cookie, BAD_SESSION
        else:
            raise Unauthorized(NO_CREDENTIALS)
        if not secret or len(secret) > 256:
            raise Unauthorized(failure)
        secret_hash = passwords.hash_secret(secret)

        def lookup(tx: Tx) -> tuple[Credential | None, User | None]:
            credential = tx.get_credential(secret_hash)
            user = tx.get_user(credential.user_id) if credential else None
            return credential, user

        credential, user = await self._store.read(lookup)
        if (
            credential is None
            or user is None
            or credential.kind is not kind
            or not passwords.secrets_equal(credential.secret_hash, secret_hash)
            or (credential.expires_utc is not None and credential.expires_utc <= now_ms())
            or not user.is_active
        ):
            raise Unauthorized(failure)
        return Principal(user=user, credential=credential, secret=secret)

    async def logout(self, cookie: str | None) -> list[int]:
        """End the session named by ``cookie``, if it is one; return the ended ids."""
        if not cookie or len(cookie) > 256:
            return []
        secret_hash = passwords.hash_secret(cookie)

        def end(tx: Tx) -> list[int]:
            credential = tx.get_credential(secret_hash)
            if credential is None or credential.kind is not CredentialKind.SESSION:
                return []
            tx.delete_credential(credential.credential_id)
            Outbox(tx, now_ms()).session_ended(credential.user_id, [credential.credential_id])
            return [credential.credential_id]

        return await self._store.write(end)

    async def issue_token(self, user_id: int) -> str:
        """Create the user's Web API token, revoking the previous one in the same transaction."""
        secret = passwords.new_secret()
        now = now_ms()

        def replace(tx: Tx) -> None:
            if tx.get_user(user_id) is None:
                raise Unauthorized(BAD_SESSION)
            revoked = tx.delete_credentials(user_id, CredentialKind.TOKEN)
            Outbox(tx, now).session_ended(user_id, revoked)
            tx.insert_credential(
                user_id, CredentialKind.TOKEN, passwords.hash_secret(secret), now, None
            )

        await self._store.write(replace)
        return secret
