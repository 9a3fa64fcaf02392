"""Prometheus metrics, in a registry of this server's own (never the global one).

Counters on the request path cost an increment; everything the broker and
the store already count is read from their ``statistics()`` at scrape time,
so the hot path of the stream pays nothing for being observed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .broker import Broker
from .bus import RedisBus
from .store import Store

__all__ = ["Metrics"]

CLOSE_REASONS = {
    1000: "normal",
    1001: "shutdown",
    1008: "rate_limit",
    1009: "frame_too_big",
    1011: "internal_error",
    4001: "session_ended",
    4008: "slow_consumer",
}
HEARTBEAT_TIMEOUT = "heartbeat_timeout"
# Every label value exists from the start (at 0), so a fresh server already
# shows each series and rate() sees the first increment.
ALL_CLOSE_REASONS = (*CLOSE_REASONS.values(), HEARTBEAT_TIMEOUT, "client_closed", "other")
RESUME_OUTCOMES = ("resumed", "resync_required")
QUEUE_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
# Labels take only these values, whatever a client sends: a raw method or
# path as a label would let anyone create series without end.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


class _BrokerCollector(Collector):
    def __init__(self, broker: Broker, store: Store, bus: RedisBus | None) -> None:
        self._broker = broker
        self._store = store
        self._bus = bus

    def collect(self) -> Iterator[Metric]:
        stats = self._broker.statistics()
        yield GaugeMetricFamily(
            "trio_events_open_streams", "Open event streams.", value=stats.subscribers
        )
        yield CounterMetricFamily(
            "trio_events_events_routed", "Events the broker routed.", value=stats.events_routed
        )
        yield CounterMetricFamily(
            "trio_events_frames_queued", "Frames queued to streams.", value=stats.frames_queued
        )
        yield CounterMetricFamily(
            "trio_events_slow_consumer_closes",
            "Streams closed with 4008 because their queue was full.",
            value=stats.drops,
        )
        yield GaugeMetricFamily(
            "trio_events_last_event_id", "The newest event id routed.", value=stats.last_event_id
        )
        depths = self._broker.queue_depths()
        buckets = [(str(b), float(sum(1 for d in depths if d <= b))) for b in QUEUE_BUCKETS]
        buckets.append(("+Inf", float(len(depths))))
        # A snapshot that can go down: a gauge histogram (OpenMetrics), not a
        # histogram, whose buckets only ever grow.
        yield GaugeHistogramMetricFamily(
            "trio_events_stream_queue_depth",
            "Open streams by frames waiting in their queue, at scrape time.",
            buckets=buckets,
            gsum_value=float(sum(depths)),
        )
        store = self._store.statistics()
        yield CounterMetricFamily(
            "trio_events_store_writes_failed",
            "Write transactions rolled back.",
            value=store.failed_writes,
        )
        if self._bus is not None:
            yield GaugeMetricFamily(
                "trio_events_bus_connected",
                "1 while the Redis bus is connected; 0 while streams rely on polling the log.",
                value=int(self._bus.connected),
            )
            yield CounterMetricFamily(
                "trio_events_bus_published",
                "Events this process published to the bus.",
                value=self._bus.published,
            )
            yield CounterMetricFamily(
                "trio_events_bus_received",
                "Events of other processes received from the bus.",
                value=self._bus.received,
            )
            yield CounterMetricFamily(
                "trio_events_bus_reconnects",
                "Attempts to reconnect to Redis after losing it.",
                value=self._bus.reconnects,
            )


class Metrics:
    """Everything ``GET /metrics`` reports for one server."""

    def __init__(self, broker: Broker, store: Store, bus: RedisBus | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_BrokerCollector(broker, store, bus))
        self.events_committed = Counter(
            "trio_events_events_committed",
            "Events appended to the log by this process.",
            registry=self.registry,
        )
        self.resumes = Counter(
            "trio_events_resumes",
            "Streams opened with ?since=, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.stream_closes = Counter(
            "trio_events_stream_closes",
            "Streams closed, by reason (heartbeat timeout, slow consumer, ...).",
            ["reason"],
            registry=self.registry,
        )
        self.heartbeat_timeouts = Counter(
            "trio_events_heartbeat_timeouts",
            "Streams closed (1011) because no pong answered a ping within heartbeat_timeout.",
            registry=self.registry,
        )
        for outcome in RESUME_OUTCOMES:
            self.resumes.labels(outcome)
        for reason in ALL_CLOSE_REASONS:
            self.stream_closes.labels(reason)
        self.requests = Histogram(
            "trio_events_http_request_seconds",
            "REST requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "trio_events_store_seconds",
            "Time of store calls (waiting for a connection included), by kind.",
            ["kind"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=self.registry,
        )

    def request_done(self, rule: str | None, method: str, status: int, seconds: float) -> None:
        """One REST request: ``rule`` is the matched URL rule (None when no
        route matched), never the path a client sent."""
        method = method if method in HTTP_METHODS else "other"
        route = rule if rule is not None else UNMATCHED_ROUTE
        self.requests.labels(route, method, str(status)).observe(seconds)

    def store_observer(self) -> Callable[[str, float], None]:
        read = self.store_seconds.labels("read")
        write = self.store_seconds.labels("write")
        return lambda kind, seconds: (read if kind == "read" else write).observe(seconds)

    def stream_closed(self, code: int | None, reason: str) -> None:
        label = CLOSE_REASONS.get(code, "other") if code is not None else "client_closed"
        if code == 1011 and "heartbeat" in reason:
            label = HEARTBEAT_TIMEOUT
            self.heartbeat_timeouts.inc()
        self.stream_closes.labels(label).inc()

    def committed(self, count: int) -> None:
        self.events_committed.inc(count)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics and their content type: OpenMetrics when the scraper's
        ``Accept`` asks for it (Prometheus does), else the classic text."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
