"""The failed-login throttle, driven by Trio's clock under ``autojump_clock``."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_events.throttle import Throttle


def make(limit: int = 3, window: float = 60.0, max_keys: int = 100) -> Throttle:
    return Throttle(limit, window, trio.current_time, max_keys=max_keys)


async def test_allows_until_limit(autojump_clock: trio.testing.MockClock) -> None:
    throttle = make(limit=3)
    for _ in range(2):
        throttle.record_failure("k")
        assert throttle.retry_after("k") is None
    throttle.record_failure("k")
    assert throttle.retry_after("k") == pytest.approx(60.0)
    assert throttle.retry_after("other") is None


async def test_window_expiry(autojump_clock: trio.testing.MockClock) -> None:
    throttle = make(limit=2, window=10.0)
    throttle.record_failure("k")
    await trio.sleep(4)
    throttle.record_failure("k")
    assert throttle.retry_after("k") == pytest.approx(6.0)
    await trio.sleep(5)
    assert throttle.retry_after("k") == pytest.approx(1.0)
    await trio.sleep(1)
    # The first failure has left the window: one failure remains, below the limit.
    assert throttle.retry_after("k") is None
    throttle.record_failure("k")
    assert throttle.retry_after("k") == pytest.approx(4.0)
    await trio.sleep(10)
    assert throttle.retry_after("k") is None
    assert len(throttle) == 0


async def test_sliding_window_counts_only_recent(autojump_clock: trio.testing.MockClock) -> None:
    throttle = make(limit=3, window=10.0)
    for _ in range(10):
        throttle.record_failure("k")
        await trio.sleep(4)  # at most three failures ever fall in one window
    assert throttle.retry_after("k") is None


async def test_reset(autojump_clock: trio.testing.MockClock) -> None:
    throttle = make(limit=1)
    throttle.record_failure("k")
    throttle.record_failure("j")
    assert throttle.retry_after("k") is not None
    throttle.reset("k")
    throttle.reset("never-seen")
    assert throttle.retry_after("k") is None
    assert throttle.retry_after("j") is not None
    assert len(throttle) == 1


async def test_max_keys_evicts_oldest(autojump_clock: trio.testing.MockClock) -> None:
    throttle = make(limit=1, window=100.0, max_keys=3)
    for key in ("a", "b", "c"):
        throttle.record_failure(key)
        await trio.sleep(1)
    throttle.record_failure("d")
    assert len(throttle) == 3
    assert throttle.retry_after("a") is None  # the oldest key was dropped
    for key in ("b", "c", "d"):
        assert throttle.retry_after(key) is not None


async def test_eviction_prefers_expired_keys(autojump_clock: trio.testing.MockClock) -> None:
    throttle = make(limit=1, window=10.0, max_keys=2)
    throttle.record_failure("old")
    await trio.sleep(20)
    throttle.record_failure("recent")
    throttle.record_failure("new")
    assert len(throttle) == 2
    assert throttle.retry_after("recent") is not None
    assert throttle.retry_after("new") is not None


async def test_memory_per_key_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    throttle = make(limit=3, window=60.0)
    for _ in range(1000):
        throttle.record_failure("k")
    assert throttle.retry_after("k") == pytest.approx(60.0)
    await trio.sleep(60)
    assert throttle.retry_after("k") is None
