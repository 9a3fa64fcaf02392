"""Failed-login throttling: a sliding window per key, pure and clock-injected.

The server keys it twice: per (user name, client address), so one account
cannot be brute-forced from one place, and per client address with a ten-fold
budget, so one address cannot spray many user names.  Memory is bounded: past
``max_keys`` keys the oldest entries are dropped first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable

__all__ = ["Throttle"]


class Throttle:
    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float],
        *,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[Hashable, deque[float]] = {}

    def _recent(self, key: Hashable) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        horizon = self._clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: Hashable) -> float | None:
        """Seconds until ``key`` may try again, or ``None`` if it may now."""
        times = self._recent(key)
        if times is None or len(times) < self.limit:
            return None
        return max(times[0] + self.window - self._clock(), 0.0)

    def record_failure(self, key: Hashable) -> None:
        times = self._recent(key)
        if times is None:
            if len(self._failures) >= self._max_keys:
                self._evict()
            times = self._failures[key] = deque(maxlen=self.limit)
        times.append(self._clock())

    def reset(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def _evict(self) -> None:
        for key in list(self._failures):
            self._recent(key)
        while len(self._failures) >= self._max_keys:
            del self._failures[next(iter(self._failures))]

    def __len__(self) -> int:
        return len(self._failures)
