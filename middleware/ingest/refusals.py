"""Refused deliveries: counted per integration and reason, shown with what to check.

A wrong secret, org or public_url is the most common setup mistake, and its only symptom
was a 401 the sender keeps retrying. Every refusal is now counted by reason, the last few
are kept with time and address (never the body, a header, a token or a signature), and a
line is logged, one per integration and reason per interval.

A flood of bad requests must not cost a database write each: refusals gather in memory and
each process writes what it gathered at most once per FLUSH_EVERY_S, in one transaction,
from a timer thread (the 401 never waits for the store). What a failed write held is kept
for the next one, so counts stay exact; the store being down never turns a 401 into a 5xx.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from time import monotonic

from sqlalchemy import Connection, Engine, case, delete, func, select

from middleware.store.tables import dialect_insert, refusal_counts, refusals, utcnow
from middleware.throttled_log import ThrottledLog, store_error

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 1.0  # one write a second at most per process, whatever the flood
LOG_EVERY_S = 10.0  # one log line per integration and reason this often, with the count
KEPT_PER_PLUGIN = 20  # the last refusals kept per integration, with time and address
KEPT_DAYS = 30  # hourly counts older than this are deleted
MAX_ADDRESS = 64
MAX_REASON = 32

# Every reason a check can give: (what failed, in a few words; what to check). Plugins say
# more where they know more (Plugin.refusal_hints): which setting, where the vendor shows it.
REASONS: dict[str, tuple[str, str]] = {
    "signature": (
        "signature does not match",
        "check that the webhook secret set here is the one the sender signs with",
    ),
    "missing-signature": (
        "signature missing",
        "the request carried no signature: check that the sender is set up as the setup "
        "steps say, and that no proxy in front drops its headers",
    ),
    "timestamp": (
        "timestamp too far off",
        "check the server clock (and the sender's); a delivery replayed long after it was "
        "sent is refused too",
    ),
    "path-token": (
        "wrong secret in the URL",
        "check that the URL set in the sender ends with the current secret",
    ),
    "organization": (
        "wrong organization",
        "check organization_id: messages from any other organization are refused",
    ),
    "account": (
        "another account",
        "the delivery names another account (shop, workspace) than the one configured here",
    ),
    "url": (
        "URL mismatch",
        "the sender signs the URL it calls: check public_url",
    ),
    "source-network": (
        "address not allowed",
        "check allowed_networks, and trusted_proxies if a proxy is in front",
    ),
    "client-certificate": (
        "no client certificate",
        "check the proxy in front verifies the sender's certificate and sets the header",
    ),
    "session-id": (
        "session id refused",
        "the session sent is not a working one of the configured organization",
    ),
    "unproven": (
        "sender not proven",
        "nothing proves the sender: see the setup steps for the proofs Carryover takes",
    ),
    "malformed": (
        "malformed body",
        "the body is not what Carryover reads: check the webhook's body and content type "
        "against the setup steps",
    ),
}


@dataclass(frozen=True)
class Reason:
    """Why deliveries were refused: a stable key, a few words, and what to check."""

    key: str
    label: str
    hint: str


def describe(key: str, hints: Mapping[str, str] | None = None) -> Reason:
    """Return a reason as admins read it: the plugin's own hint, else the generic one."""
    label, hint = REASONS.get(key, (key, "see the setup steps"))
    return Reason(key, label, (hints or {}).get(key, hint))


@dataclass
class _Gathered:
    """What one integration's refusals add up to since the last write."""

    counts: Counter[tuple[str, datetime]] = field(default_factory=Counter)  # (reason, hour)
    last_at: dict[tuple[str, datetime], datetime] = field(default_factory=dict)
    samples: deque[tuple[datetime, str, str]] = field(
        default_factory=lambda: deque(maxlen=KEPT_PER_PLUGIN)
    )  # (at, reason, address), oldest first

    def add(self, reason: str, at: datetime) -> None:
        """Count one refusal in its hour."""
        bucket = (reason, at.replace(minute=0, second=0, microsecond=0))
        self.counts[bucket] += 1
        self.last_at[bucket] = max(at, self.last_at.get(bucket, at))

    def merge_older(self, older: _Gathered) -> None:
        """Take back what a failed write held: its counts, and samples older than ours."""
        for bucket, count in older.counts.items():
            self.counts[bucket] += count
            self.last_at[bucket] = max(
                older.last_at[bucket], self.last_at.get(bucket, older.last_at[bucket])
            )
        newer = list(self.samples)
        self.samples.clear()
        self.samples.extend([*older.samples, *newer])


class RefusalRecorder:
    """Gather refusals in memory and write them to the store at most once per interval."""

    def __init__(
        self, engine: Engine, flush_every_s: float = FLUSH_EVERY_S, log_every_s: float = LOG_EVERY_S
    ) -> None:
        self.engine = engine
        self.flush_every_s = flush_every_s
        self.writes = 0  # transactions written, for the tests of the aggregation
        self._gathered: dict[str, _Gathered] = {}
        self._lock = threading.Lock()  # web threads record at the same time
        self._flushing = threading.Lock()  # one write at a time: the timer's, or close()'s
        self._timer: threading.Timer | None = None
        self._flushed_at = float("-inf")
        self._closed = False
        self._log = ThrottledLog(log, log_every_s)

    def record(self, plugin: str, reason: Reason, address: str) -> None:
        """Count one refused delivery of plugin; log it unless logged within the interval."""
        at = utcnow()
        address = address[:MAX_ADDRESS]
        with self._lock:
            gathered = self._gathered.setdefault(plugin, _Gathered())
            gathered.add(reason.key[:MAX_REASON], at)
            gathered.samples.append((at, reason.key[:MAX_REASON], address))
            self._schedule()
        self._log.log(
            logging.WARNING, f"{plugin}:{reason.key}", "refused a %s delivery from %s: %s; %s",
            plugin, address or "an unknown address", reason.label, reason.hint,
            extra={"integration": plugin, "reason": reason.key, "client": address,
                   "outcome": "refused"},
        )  # fmt: skip

    def flush(self) -> bool:
        """Write what was gathered now; keep it for the next write if the store fails."""
        with self._flushing:
            with self._lock:
                taken, self._gathered = self._gathered, {}
                self._flushed_at = monotonic()
            if not taken:
                return True
            try:
                with self.engine.begin() as conn:
                    _write(conn, taken)
            except Exception as exc:  # the store is down, or a bug: the counts wait in memory
                self._log.log(logging.ERROR, "store", "could not record refused deliveries: %s",
                              store_error(exc))  # fmt: skip
                with self._lock:
                    for plugin, older in taken.items():
                        self._gathered.setdefault(plugin, _Gathered()).merge_older(older)
                    self._schedule()
                return False
            self.writes += 1
            return True

    def close(self) -> None:
        """Stop the timer and write what is left (on shutdown)."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self.flush()

    def _schedule(self) -> None:
        """Start the timer that writes what was gathered, unless one runs (lock held)."""
        if self._timer is not None or self._closed:
            return
        delay = max(0.0, self._flushed_at + self.flush_every_s - monotonic())
        self._timer = threading.Timer(delay, self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
        self.flush()


def _write(conn: Connection, taken: Mapping[str, _Gathered]) -> None:
    """Add the gathered counts, keep the newest samples, and drop counts past KEPT_DAYS."""
    for plugin, gathered in sorted(taken.items()):
        for (reason, hour), count in sorted(gathered.counts.items()):
            insert = dialect_insert(conn, refusal_counts).values(
                plugin=plugin, reason=reason, hour=hour, count=count,
                last_at=gathered.last_at[(reason, hour)],
            )  # fmt: skip
            newer = insert.excluded.last_at > refusal_counts.c.last_at
            conn.execute(insert.on_conflict_do_update(
                index_elements=["plugin", "reason", "hour"],
                set_={"count": refusal_counts.c.count + insert.excluded.count,
                      "last_at": case((newer, insert.excluded.last_at),
                                      else_=refusal_counts.c.last_at)},
            ))  # fmt: skip
        rows = [{"plugin": plugin, "at": at, "reason": reason, "address": address}
                for at, reason, address in gathered.samples]  # fmt: skip
        if rows:
            conn.execute(refusals.insert(), rows)
        oldest_kept = (
            select(refusals.c.id).where(refusals.c.plugin == plugin)
            .order_by(refusals.c.id.desc()).offset(KEPT_PER_PLUGIN - 1).limit(1)
            .scalar_subquery()
        )  # fmt: skip
        conn.execute(delete(refusals).where(refusals.c.plugin == plugin,
                                            refusals.c.id < oldest_kept))  # fmt: skip
    cutoff = utcnow() - timedelta(days=KEPT_DAYS)
    conn.execute(delete(refusal_counts).where(refusal_counts.c.hour < cutoff))


# -- reading ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReasonCount:
    """How often one reason refused deliveries: in the last day, and in the days kept."""

    reason: Reason
    last_day: int
    kept: int
    last_at: datetime


@dataclass(frozen=True)
class Refusal:
    """One refused delivery: when, why, and the address it came from."""

    at: datetime
    reason: Reason
    address: str


@dataclass(frozen=True)
class RefusalReport:
    """One integration's refusals: counts by reason (most recent first) and the last few."""

    plugin: str
    by_reason: tuple[ReasonCount, ...]
    recent: tuple[Refusal, ...]

    @property
    def last_day(self) -> int:
        """Return how many were refused in the last 24 hours (by the hour)."""
        return sum(r.last_day for r in self.by_reason)

    @property
    def top(self) -> Reason | None:
        """Return the reason that refused the most in the last 24 hours."""
        counted = [r for r in self.by_reason if r.last_day]
        return max(counted, key=lambda r: (r.last_day, r.last_at)).reason if counted else None

    @property
    def last_at(self) -> datetime | None:
        """Return when the newest refusal happened."""
        return max((r.last_at for r in self.by_reason), default=None)


def _day_start(now: datetime) -> datetime:
    # Counts are by the hour: "the last 24 h" is the hour now is in and the 24 before it.
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=24)


def refusal_reports(
    conn: Connection, hints: Mapping[str, Mapping[str, str]], now: datetime,
    plugins: Iterable[str] | None = None, recent: bool = True,
) -> dict[str, RefusalReport]:  # fmt: skip
    """Return the refusals of each plugin that has any (hints: each plugin's, by reason)."""
    since = _day_start(now)
    last_day = func.sum(case((refusal_counts.c.hour >= since, refusal_counts.c.count), else_=0))
    query = select(
        refusal_counts.c.plugin, refusal_counts.c.reason, last_day.label("last_day"),
        func.sum(refusal_counts.c.count).label("kept"), func.max(refusal_counts.c.last_at),
    ).group_by(refusal_counts.c.plugin, refusal_counts.c.reason)  # fmt: skip
    if plugins is not None:
        query = query.where(refusal_counts.c.plugin.in_(list(plugins)))
    counts: dict[str, list[ReasonCount]] = {}
    for plugin, reason, day, kept, last_at in conn.execute(query):
        counted = ReasonCount(
            describe(reason, hints.get(plugin)), int(day or 0), int(kept), last_at
        )
        counts.setdefault(plugin, []).append(counted)
    reports = {}
    for plugin, rows in counts.items():
        rows.sort(key=lambda r: (r.last_day, r.last_at), reverse=True)
        samples = _recent(conn, plugin, hints.get(plugin)) if recent else ()
        reports[plugin] = RefusalReport(plugin, tuple(rows), samples)
    return reports


def _recent(conn: Connection, plugin: str, hints: Mapping[str, str] | None) -> tuple[Refusal, ...]:
    query = (
        select(refusals.c.at, refusals.c.reason, refusals.c.address)
        .where(refusals.c.plugin == plugin).order_by(refusals.c.id.desc()).limit(KEPT_PER_PLUGIN)
    )  # fmt: skip
    return tuple(
        Refusal(at, describe(reason, hints), address) for at, reason, address in conn.execute(query)
    )
