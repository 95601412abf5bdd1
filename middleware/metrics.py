"""The figures of GET /metrics, in Prometheus' terms: read from the store, or counted here.

What every process shares is read from the store at the scrape, so that the web processes
and the workers agree whatever process is scraped: deliveries and notes by status, the
queues' depth and lag, refusals by reason, the workers alive. The reads group in SQL and are
kept for STORE_CACHE_S, so a scraper (or several) costs the store one read of each table that
often.

What only happens in a process is counted in it: the calls it made to the upstreams, how
long its notes took from the delivery's arrival to being written, the screen-pops it holds
open. A worker run as a process of its own (`carryover worker`) serves no /metrics: these
figures then count the web process's own work.

Each installation has its own CollectorRegistry, never prometheus_client's global one, so
that two apps in one process (tests, the demo) never count into each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from middleware.ingest.refusals import refusal_reports
from middleware.notes.outbox import ATTEMPTING
from middleware.process.liveness import alive_count
from middleware.store.queue import PENDING
from middleware.store.tables import deliveries, reading, utcnow, writes
from middleware.throttled_log import ThrottledLog, store_error

if TYPE_CHECKING:
    from middleware.integrations.upstreams import UpstreamHealth
    from middleware.reads.live import LiveUpdates
    from middleware.store.wakeups import Wakeups

log = logging.getLogger(__name__)
STORE_CACHE_S = 5.0
# From a webhook's arrival to its note written: seconds normally, minutes while an
# upstream is paused, hours while it is down.
NOTE_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 4 * 3600, 24 * 3600)
TIMED_NOTES_KEPT = 10_000  # notes queued here and not written yet whose arrival is known
WAITING_NOTES = (PENDING, ATTEMPTING)


class StoreFigures(Collector):
    """Read the figures every process shares from the store, at most once per STORE_CACHE_S."""

    def __init__(self, engine: Engine, cache_s: float = STORE_CACHE_S) -> None:
        self.engine = engine
        self.cache_s = cache_s
        self._read_at = float("-inf")
        self._families: list[Metric] = []
        self._lock = threading.Lock()  # one read at a time; the others take its result
        self._faults = ThrottledLog(log, 60.0)

    def collect(self) -> Iterator[Metric]:
        """Yield the store's figures (and whether the store could be read)."""
        with self._lock:
            if time.monotonic() - self._read_at >= self.cache_s:
                self._families = self._read()
                self._read_at = time.monotonic()
            families = self._families
        yield from families

    def _read(self) -> list[Metric]:
        up = GaugeMetricFamily("carryover_store_up", "1 if the store could be read at the scrape")
        try:
            with reading(self.engine) as conn:
                families = store_families(conn, utcnow())
        except SQLAlchemyError as exc:  # /metrics still answers, with what this process knows
            self._faults.log(logging.WARNING, "store", "could not read the figures of /metrics: "
                             "%s", store_error(exc))  # fmt: skip
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]


def store_families(conn: Connection, now: datetime) -> list[Metric]:
    """Return deliveries and notes by status, queue depth and lag, refusals, workers alive."""
    stored = GaugeMetricFamily(
        "carryover_deliveries", "Webhook deliveries in the store, by integration and status "
        "(pending: waiting for the worker, done: processed, dead: given up)",
        labels=["integration", "status"],
    )  # fmt: skip
    notes = GaugeMetricFamily(
        "carryover_notes", "Notes for the tools in the store, by integration and status "
        "(pending, attempting: being written, done: written, dead: given up)",
        labels=["integration", "status"],
    )  # fmt: skip
    depth = GaugeMetricFamily(
        "carryover_queue_depth", "Items waiting: inbound (webhooks to process), outbound "
        "(notes to write)", labels=["queue"],
    )  # fmt: skip
    lag = GaugeMetricFamily(
        "carryover_queue_lag_seconds", "Age of the oldest item waiting in the queue (0 when "
        "none waits)", labels=["queue"],
    )  # fmt: skip
    queues = (("inbound", deliveries.c.plugin, deliveries.c.received_at, (PENDING,), stored),
              ("outbound", writes.c.target, writes.c.created_at, WAITING_NOTES, notes))  # fmt: skip
    for queue, integration, arrived, waiting, family in queues:
        rows = conn.execute(
            select(integration, integration.table.c.status, func.count(), func.min(arrived))
            .group_by(integration, integration.table.c.status)
        ).all()  # fmt: skip
        waiting_count, oldest = 0, None
        for key, status, count, first in rows:
            family.add_metric([key, status], int(count))
            if status in waiting:
                waiting_count += int(count)
                oldest = first if oldest is None or first < oldest else oldest
        depth.add_metric([queue], waiting_count)
        lag.add_metric([queue], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
    refused = GaugeMetricFamily(
        "carryover_refusals_last_day", "Deliveries refused in the last 24 hours (counted by the "
        "hour), by integration and reason", labels=["integration", "reason"],
    )  # fmt: skip
    for plugin, report in sorted(refusal_reports(conn, {}, now, recent=False).items()):
        for reason in report.by_reason:
            refused.add_metric([plugin, reason.reason.key], reason.last_day)
    alive = GaugeMetricFamily(
        "carryover_workers_alive", "Workers (processes of their own and embedded ones) whose "
        "heartbeat was seen within their last three leases",
    )  # fmt: skip
    alive.add_metric([], alive_count(conn, now))
    return [stored, notes, depth, lag, refused, alive]


class ProcessFigures(Collector):
    """Report what this process counted: upstream calls by status, open screen-pops."""

    def __init__(self, health: UpstreamHealth, live: LiveUpdates, wakeups: Wakeups) -> None:
        self.health = health
        self.live = live
        self.wakeups = wakeups

    def collect(self) -> Iterator[Metric]:
        """Yield the upstream calls made and the pops open in this process."""
        calls = CounterMetricFamily(
            "carryover_upstream_calls", "Calls this process made to the tools' APIs, by "
            "upstream and HTTP status (error: no answer, e.g. a timeout or a refused "
            "connection)", labels=["upstream", "status"],
        )  # fmt: skip
        for (upstream, status), count in sorted(self.health.call_counts().items()):
            calls.add_metric([upstream, status], count)
        pops = GaugeMetricFamily("carryover_open_pops", "Screen-pops open on this process "
                                 "(their live streams)")  # fmt: skip
        pops.add_metric([], self.live.open_streams)
        yield calls
        yield pops
        if self.wakeups.enabled:  # PostgreSQL: the other processes' changes wake this one
            listening = GaugeMetricFamily(
                "carryover_listening", "1 while this process listens for the other processes' "
                "changes (LISTEN); 0: it finds them only by polling, e.g. behind a pooler in "
                "transaction mode",
            )  # fmt: skip
            listening.add_metric([], int(self.wakeups.listening))
            yield listening


class Metrics:
    """One installation's figures: a registry of its own, and the note latency it times."""

    def __init__(
        self, engine: Engine, health: UpstreamHealth, live: LiveUpdates, wakeups: Wakeups
    ) -> None:
        self.registry = CollectorRegistry()
        self.store = StoreFigures(engine)
        self.registry.register(self.store)
        self.registry.register(ProcessFigures(health, live, wakeups))
        ProcessCollector(registry=self.registry)
        self.note_latency = Histogram(
            "carryover_note_latency_seconds", "From a webhook's arrival to the note it caused "
            "being written, by the integration written to (notes queued by another process: "
            "from when they were queued)", ["integration"], buckets=NOTE_LATENCY_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self._arrived: OrderedDict[int, datetime] = OrderedDict()  # write id → its delivery's
        self._lock = threading.Lock()

    def notes_queued(self, write_ids: Sequence[int], received_at: datetime) -> None:
        """Remember when the delivery that queued these notes arrived, to time them."""
        with self._lock:
            for write_id in write_ids:
                self._arrived[write_id] = received_at
            while len(self._arrived) > TIMED_NOTES_KEPT:  # notes that never get written
                self._arrived.popitem(last=False)

    def note_written(self, integration: str, write_id: int, queued_at: datetime) -> float:
        """Time a note just written from its delivery's arrival; return the seconds."""
        with self._lock:
            arrived = self._arrived.pop(write_id, queued_at)
        seconds = max(0.0, (utcnow() - arrived).total_seconds())
        self.note_latency.labels(integration).observe(seconds)
        return seconds
