"""Password hashing and opaque credential secrets.

Passwords use argon2id through argon2-cffi with OWASP's minimum profile
(t=2, m=19 MiB, p=1): about 70 ms per hash on this project's reference machine,
where argon2-cffi's defaults cost about 280 ms.  Login is rate-limited, and a
two-core server that spends a quarter second of CPU per login attempt hands
attackers a cheap denial of service; the OWASP profile keeps offline cracking
expensive while a login stays affordable.  Hashing runs in a worker thread.

Session ids and tokens are 256-bit random strings; only their SHA-256 is
stored.  A fast hash is right here: the secret has full entropy, so there is
nothing to brute-force, and lookups go by the hash's index.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "hash_password",
    "hash_password_sync",
    "hash_secret",
    "new_secret",
    "secrets_equal",
    "verify_password",
    "verify_password_sync",
]

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# A hash to verify against when the user name is unknown, so that a wrong
# user name costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
# Argon2 is CPU- and memory-bound: at most two hashes at once on two cores.
_hash_limiter = trio.CapacityLimiter(2)


def hash_password_sync(password: str) -> str:
    return _hasher.hash(password)


def verify_password_sync(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    return await trio.to_thread.run_sync(hash_password_sync, password, limiter=_hash_limiter)


async def verify_password(stored_hash: str | None, password: str) -> bool:
    return await trio.to_thread.run_sync(
        verify_password_sync, stored_hash, password, limiter=_hash_limiter
    )


def new_secret() -> str:
    """A fresh session id or token: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
