"""Retention (trio_events.retention): trim the log by age and by count, a prefix at a time.

The log is filled with synthetic events whose ``created_utc`` the test picks,
through a store without a broker, so ``trim_once(now=...)`` is exact.
``run_retention``'s schedule is checked in virtual time over a recording store.
Everything that goes through the store runs on both backends (``backend_config``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs
import trio
import trio.testing

from trio_events.config import Config, EventsConfig, load_config
from trio_events.model import now_ms
from trio_events.retention import RETENTION_BATCH, RETENTION_INTERVAL, run_retention, trim_once
from trio_events.store import Store, Tx, open_store

from .fault_helpers import REPO_CONFIG
from .helpers import TEST_TIMEOUT, make_config, serving
from .pg_helpers import backend_config_fixture  # noqa: F401
from .resume_helpers import trimmed_through, whole_log

T = TypeVar("T")
NOW = 10_000_000_000  # ms (in 1970: the tests that use it pass `now`)


def events_config(config: Config, **changes: Any) -> EventsConfig:
    return attrs.evolve(config.events, **changes)


async def append(store: Store, created: Sequence[int]) -> list[int]:
    """Append one synthetic event per ``created`` timestamp (ms), in one transaction."""

    def write(tx: Tx) -> list[int]:
        return [tx.append_event("Test", "{}", None, None, utc) for utc in created]

    return await store.write(write)


async def ids(store: Store) -> list[int]:
    return [event.event_id for event in await whole_log(store)]


async def test_trims_by_age_a_prefix_only(backend_config: Config) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        config = backend_config
        events = events_config(config, retention_seconds=100.0, retention_events=1000)
        async with open_store(config) as store:
            old, new = NOW - 200_000, NOW - 50_000
            appended = await append(store, [old] * 5 + [new] * 3 + [old] * 2 + [new])
            assert await trim_once(store, events, now=NOW) == 5
            assert await trimmed_through(store) == appended[4]
            # the old events after a newer one stay: only a prefix goes
            assert await ids(store) == appended[5:]
            assert await trim_once(store, events, now=NOW) == 0
            assert await trimmed_through(store) == appended[4]
            # later, the whole rest has expired except the newest
            assert await trim_once(store, events, now=NOW + 100_000 - 50_000 + 1) == 6
            assert await ids(store) == []
            assert await trimmed_through(store) == appended[-1]


async def test_boundary_of_age_is_kept(backend_config: Config) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        config = backend_config
        events = events_config(config, retention_seconds=10.0)
        async with open_store(config) as store:
            appended = await append(store, [NOW - 10_001, NOW - 10_000, NOW])
            assert await trim_once(store, events, now=NOW) == 1
            assert await ids(store) == appended[1:]


async def test_trims_by_count(backend_config: Config) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        config = backend_config
        events = events_config(config, retention_events=4, retention_seconds=10_000.0)
        async with open_store(config) as store:
            appended = await append(store, [NOW] * 10)
            assert await trim_once(store, events, now=NOW) == 6
            assert await ids(store) == appended[6:]
            assert await trimmed_through(store) == appended[5]
            assert await trim_once(store, events, now=NOW) == 0
            more = await append(store, [NOW] * 2)
            assert await trim_once(store, events, now=NOW) == 2
            assert await ids(store) == appended[8:] + more


async def test_newer_than_both_limits_stay(backend_config: Config) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        config = backend_config
        events = events_config(config, retention_events=5, retention_seconds=60.0)
        async with open_store(config) as store:
            # by age 3 would go, by count 2: the union goes
            appended = await append(store, [NOW - 61_000] * 3 + [NOW - 1_000] * 4)
            assert await trim_once(store, events, now=NOW) == 3
            assert await ids(store) == appended[3:]
            events = events_config(config, retention_events=2, retention_seconds=60.0)
            assert await trim_once(store, events, now=NOW) == 2
            assert await ids(store) == appended[5:]


async def test_a_big_trim_runs_in_batches(backend_config: Config) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        config = backend_config
        events = events_config(config, retention_seconds=1.0)
        count = 5 * RETENTION_BATCH + 123
        async with open_store(config) as store:
            appended = await append(store, [NOW - 5_000] * count + [NOW] * 3)
            writes = store.statistics().writes
            assert await trim_once(store, events, now=NOW) == count
            batches = count // RETENTION_BATCH + 1
            assert store.statistics().writes - writes == batches
            assert await ids(store) == appended[count:]
            assert await trimmed_through(store) == appended[count - 1]


@attrs.define
class SpyStore:
    """Delegates writes to ``store``; tells when the first one (the trim's) began."""

    store: Store
    started: trio.Event = attrs.Factory(trio.Event)

    async def write(self, fn: Callable[[Tx], T]) -> T:
        self.started.set()
        return await self.store.write(fn)


async def test_writers_get_in_between_batches(backend_config: Config) -> None:
    """A writer that arrives during a long trim commits before the trim ends."""
    with trio.fail_after(TEST_TIMEOUT):
        config = backend_config
        events = events_config(config, retention_seconds=1.0)
        async with open_store(config) as store:
            await append(store, [NOW - 5_000] * (8 * RETENTION_BATCH))
            spy = SpyStore(store)
            order: list[str] = []

            async def trim() -> None:
                await trim_once(cast(Store, spy), events, now=NOW)
                order.append("trim done")

            async def writer() -> None:
                await spy.started.wait()
                await append(store, [NOW])
                order.append("write done")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trim)
                nursery.start_soon(writer)
            assert order == ["write done", "trim done"]


@attrs.define
class RecordingStore:
    """A store whose write transactions record the virtual time of each trim."""

    trims: list[float] = attrs.Factory(list)

    async def write(self, fn: Callable[[Tx], T]) -> T:
        return fn(cast(Tx, self))

    def latest_event_id(self) -> int:
        return 0

    def trim_events(self, older_than_utc: int, keep_after_id: int, limit: int) -> int:
        self.trims.append(trio.current_time())
        return 0


async def test_run_retention_schedule(autojump_clock: trio.testing.MockClock) -> None:
    config = make_config(Path("unused"))
    fake = RecordingStore()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(run_retention, cast(Store, fake), config.events)
        await trio.sleep(3 * RETENTION_INTERVAL + 1)
        nursery.cancel_scope.cancel()
    assert [t - start for t in fake.trims] == [i * RETENTION_INTERVAL for i in range(4)]


async def test_server_trims_at_start(backend_config: Config) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_store(backend_config) as store:
            appended = await append(store, [now_ms()] * 20)
        small = attrs.evolve(
            backend_config, events=events_config(backend_config, retention_events=5)
        )
        async with serving(small) as (server, _):
            store = server.services.store
            with trio.fail_after(5):
                while await trimmed_through(store) < appended[-6]:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            remaining = await ids(store)
            assert remaining[0] == await trimmed_through(store) + 1
            assert len(remaining) == 5


RETENTION_DEFAULTS = {
    "retention_seconds": 24 * 3600.0,  # README, Delivery guarantees 5: 24 h
    "retention_events": 1_000_000,  # and 1,000,000 events
}


def test_retention_defaults() -> None:
    """The documented defaults, from the config class, from a config loaded with
    nothing set, and from both shipped config files (the repository's
    ``config.toml`` and the packaged ``default_config.toml`` that ``init``
    writes), read as TOML and loaded."""
    loaded = load_config(None, environ={})
    for events in (EventsConfig(), Config().events, loaded.events):
        assert {k: getattr(events, k) for k in RETENTION_DEFAULTS} == RETENTION_DEFAULTS
    packaged = resources.files("trio_events").joinpath("default_config.toml")
    for path in (REPO_CONFIG, packaged):
        with path.open("rb") as f:
            table = tomllib.load(f)["events"]
        assert {k: table[k] for k in RETENTION_DEFAULTS} == RETENTION_DEFAULTS, path
    events = load_config(REPO_CONFIG, environ={}).events
    assert {k: getattr(events, k) for k in RETENTION_DEFAULTS} == RETENTION_DEFAULTS
