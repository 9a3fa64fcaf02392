"""Password hashing and opaque secrets."""

from __future__ import annotations

import string

from trio_events import passwords


async def test_hash_and_verify() -> None:
    stored = await passwords.hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert await passwords.verify_password(stored, "correct horse")
    assert not await passwords.verify_password(stored, "wrong horse")
    assert not await passwords.verify_password(stored, "")


async def test_hashes_are_salted() -> None:
    first = await passwords.hash_password("same password")
    second = await passwords.hash_password("same password")
    assert first != second
    assert await passwords.verify_password(second, "same password")


def test_sync_variants() -> None:
    stored = passwords.hash_password_sync("password-one")
    assert passwords.verify_password_sync(stored, "password-one")
    assert not passwords.verify_password_sync(stored, "password-two")


async def test_unknown_user_dummy_path_is_false() -> None:
    assert not passwords.verify_password_sync(None, "anything")
    assert not await passwords.verify_password(None, "anything")
    assert not await passwords.verify_password(None, "")


def test_invalid_stored_hash_is_false() -> None:
    assert not passwords.verify_password_sync("not-a-hash", "anything")
    assert not passwords.verify_password_sync("", "anything")


def test_hash_secret_is_stable_hex() -> None:
    digest = passwords.hash_secret("some-secret")
    assert digest == passwords.hash_secret("some-secret")
    assert len(digest) == 64
    assert set(digest) <= set(string.hexdigits.lower())
    assert digest != passwords.hash_secret("some-secret2")
    # SHA-256 of the empty string, a known vector.
    assert passwords.hash_secret("") == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_new_secret_is_distinct_and_url_safe() -> None:
    secrets = {passwords.new_secret() for _ in range(100)}
    assert len(secrets) == 100
    alphabet = set(string.ascii_letters + string.digits + "-_")
    for secret in secrets:
        assert len(secret) >= 43  # 32 random bytes
        assert set(secret) <= alphabet


def test_secrets_equal() -> None:
    assert passwords.secrets_equal("abc", "abc")
    assert not passwords.secrets_equal("abc", "abd")
    assert not passwords.secrets_equal("abc", "abcd")
