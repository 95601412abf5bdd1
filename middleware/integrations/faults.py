"""Upstream faults as an operator sees them: pauses, the work that waits, the latest errors.

/readyz, the admin overview and the integration pages show one picture, read here. An
upstream's health (paused, failing) is its row in upstream_state; the work waiting for it is
its pending deliveries (by plugin) and notes (by target), each with what holds it back (the
waiting_for column of queue.py). The note budget is a throttle Carryover keeps on purpose:
notes that wait for it are counted as waiting, never as errors.

The latest error is the newest by time, never the largest text. The upstream's own record
(last_error_at) dates its call failures exactly; a row keeps no time of its last error, so
its error is dated by the latest time the row has that cannot be after it (see
_error_time): the row's own failures still compete with the upstream's record by time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, DateTime, Table, and_, case, func, or_, select

from middleware.integrations.plugin import UPSTREAM_CAPABILITIES
from middleware.integrations.registry import PluginRegistry
from middleware.integrations.upstreams import UpstreamStatus, stored_statuses, upstream_report
from middleware.integrations.usage import usage_report
from middleware.notes.outbox import ATTEMPTING
from middleware.store.queue import NOTE_BUDGET, PAUSED_UPSTREAM, PENDING, UNKNOWN_OUTCOME
from middleware.store.tables import deliveries, utcnow, writes

WAITING_STATUSES = (PENDING, ATTEMPTING)
RETRY = "retry"  # waits out its own backoff after an error
QUEUED = "queued"  # no error: due, or being worked on
# Why work waits, in the order shown.
REASONS = (PAUSED_UPSTREAM, NOTE_BUDGET, UNKNOWN_OUTCOME, RETRY, QUEUED)
DELIVERY_REASONS = (PAUSED_UPSTREAM, RETRY, QUEUED)  # the budget and the outcome hold notes only
ERROR_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class Waiting:
    """The work queued for one upstream, counted by what holds it back."""

    deliveries: dict[str, int] = field(default_factory=dict)  # reason → deliveries
    notes: dict[str, int] = field(default_factory=dict)  # reason → notes
    oldest_at: datetime | None = None  # when the oldest waiting item arrived

    @property
    def delivery_count(self) -> int:
        """Return how many deliveries wait."""
        return sum(self.deliveries.values())

    @property
    def note_count(self) -> int:
        """Return how many notes wait."""
        return sum(self.notes.values())


@dataclass(frozen=True)
class SeenError:
    """One error and when it happened: on a call, a webhook, or a note."""

    text: str
    at: datetime
    source: str  # "call" (the upstream's own record), "webhook", or "note"
    paused: bool = False  # met on a row held by its upstream's pause


@dataclass(frozen=True)
class UpstreamFaults:
    """What an operator needs to know of one upstream at one moment."""

    key: str
    state: str  # "ok", "paused", or "failing" (not paused, failed last time)
    status: UpstreamStatus | None = None
    paused_for_s: float = 0.0
    waiting: Waiting = field(default_factory=Waiting)
    webhooks_with_error: int = 0
    notes_with_error: int = 0
    latest_error: SeenError | None = None


def upstream_keys(registry: PluginRegistry) -> list[str]:
    """Return the configured integrations that call an upstream API."""
    return sorted(
        key
        for key, plugin in registry.instances.items()
        if any(plugin.has_capability(c) for c in UPSTREAM_CAPABILITIES)
    )


def read_faults(
    conn: Connection, keys: Iterable[str], errors_since: datetime | None = None
) -> dict[str, UpstreamFaults]:
    """Return the faults of the given upstreams and of any other the store has a state for.

    Errors count when their row still waits, or happened after `errors_since` (all when None).
    """
    now = utcnow()
    statuses = stored_statuses(conn)
    names = sorted(set(keys) | statuses.keys())
    waiting = _waiting(conn)
    errors_in = _row_errors(conn, deliveries, errors_since)
    errors_out = _row_errors(conn, writes, errors_since)
    faults = {}
    for key in names:
        status = statuses.get(key)
        paused = status.paused_for(now) if status else 0.0
        count_in, latest_in = errors_in.get(key, (0, None))
        count_out, latest_out = errors_out.get(key, (0, None))
        faults[key] = UpstreamFaults(
            key=key, state=status.state(now) if status else "ok", status=status,
            paused_for_s=paused, waiting=waiting.get(key, Waiting()), webhooks_with_error=count_in,
            notes_with_error=count_out,
            latest_error=_latest(_call_error(status, errors_since), latest_in, latest_out),
        )  # fmt: skip
    return faults


def latest_error(conn: Connection, key: str) -> SeenError | None:
    """Return the newest error of an integration: of its calls, webhooks or notes."""
    status = stored_statuses(conn, key).get(key)
    candidates = [_row_errors(conn, table, None, key).get(key, (0, None))[1]
                  for table in (deliveries, writes)]  # fmt: skip
    return _latest(_call_error(status, None), *candidates)


def readiness(conn: Connection, keys: Iterable[str]) -> tuple[list[str], dict[str, Any]]:
    """Return the configured upstreams that are paused or failing, and every upstream's report.

    Each report joins the upstream's health (upstream_report), its last API usage
    (usage_report) and the work waiting for it. Nothing in it is a secret.
    """
    configured = sorted(keys)
    health, usage, waiting = upstream_report(conn), usage_report(conn), _waiting(conn)
    report: dict[str, Any] = {}
    for key in sorted(set(configured) | health.keys() | usage.keys()):
        entry = dict(health.get(key) or {"state": "ok", "failures_in_a_row": 0})
        entry.update(usage.get(key, {}))
        entry["waiting"] = _waiting_report(waiting.get(key, Waiting()))
        report[key] = entry
    unwell = [key for key in configured if report[key]["state"] != "ok"]
    return unwell, report


def _waiting_report(waiting: Waiting) -> dict[str, Any]:
    return {
        "deliveries": waiting.delivery_count,
        "deliveries_by_reason": {r: waiting.deliveries.get(r, 0) for r in DELIVERY_REASONS},
        "notes": waiting.note_count,
        "notes_by_reason": {r: waiting.notes.get(r, 0) for r in REASONS},
        "oldest_s": round((utcnow() - waiting.oldest_at).total_seconds(), 1)
        if waiting.oldest_at
        else None,
    }


# -- reading the store ---------------------------------------------------------------------------
def _upstream_column(table: Table) -> Any:
    return table.c.plugin if table is deliveries else table.c.target


def _arrival_column(table: Table) -> Any:
    return table.c.received_at if table is deliveries else table.c.created_at


def _waiting(conn: Connection) -> dict[str, Waiting]:
    """Count the waiting deliveries and notes of every upstream by what holds them back."""
    counts: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
    oldest: dict[str, datetime] = {}
    for side, table in enumerate((deliveries, writes)):
        lane, has_error = _upstream_column(table), table.c.last_error.is_not(None)
        rows = conn.execute(
            select(
                lane, table.c.waiting_for, has_error, func.count(), func.min(_arrival_column(table))
            )
            .where(table.c.status.in_(WAITING_STATUSES))
            .group_by(lane, table.c.waiting_for, has_error)
        ).all()
        for key, waiting_for, errored, count, first in rows:
            reason = waiting_for or (RETRY if errored else QUEUED)
            by_reason = counts.setdefault(key, ({}, {}))[side]
            by_reason[reason] = by_reason.get(reason, 0) + int(count)
            if first is not None and (key not in oldest or first < oldest[key]):
                oldest[key] = first
    return {key: Waiting(deliveries=dict(sorted(d.items(), key=_by_reason)),
                         notes=dict(sorted(n.items(), key=_by_reason)),
                         oldest_at=oldest.get(key))
            for key, (d, n) in counts.items()}  # fmt: skip


def _by_reason(item: tuple[str, int]) -> int:
    return REASONS.index(item[0]) if item[0] in REASONS else len(REASONS)


def _error_time(conn: Connection, table: Table) -> Any:
    """Date a row's last error by the latest time the row has that cannot be after it.

    A delivery: the first of its failures in a row, else its arrival (a delivery refused for
    good keeps no other time). A note: the later of its last send and the first of its
    failures in a row, else when it was queued.
    """
    if table is deliveries:
        return func.coalesce(table.c.failing_since, table.c.received_at)
    later = func.max if conn.dialect.name == "sqlite" else func.greatest
    sent = func.coalesce(table.c.attempted_at, table.c.created_at)
    return later(sent, func.coalesce(table.c.failing_since, sent), type_=DateTime())


def _row_errors(
    conn: Connection, table: Table, since: datetime | None, key: str | None = None
) -> dict[str, tuple[int, SeenError | None]]:
    """Count each upstream's rows with an error, and find the newest of those errors.

    A row counts while it waits, or when its error came after `since`. A note waiting for
    the note budget is not failing, whatever error it met before: it is left out.
    """
    lane, at = _upstream_column(table), _error_time(conn, table)
    conditions = [
        table.c.last_error.is_not(None),
        or_(table.c.waiting_for.is_(None), table.c.waiting_for != NOTE_BUDGET),
    ]
    if since is not None:
        conditions.append(or_(table.c.status.in_(WAITING_STATUSES), at >= since))
    if key is not None:
        conditions.append(lane == key)
    # A row held by a pause only repeats its upstream's error, which the upstream's own
    # record dates exactly: the newest of the other rows comes first.
    held = case((table.c.waiting_for == PAUSED_UPSTREAM, 1), else_=0)
    newest = func.row_number().over(partition_by=lane,
                                    order_by=(held, at.desc(), table.c.id.desc()))  # fmt: skip
    ranked = (
        select(lane.label("key"), table.c.last_error, at.label("at"), held.label("held"),
               newest.label("rank"), func.count().over(partition_by=lane).label("rows"))
        .where(and_(*conditions))
        .subquery()
    )  # fmt: skip
    source = "webhook" if table is deliveries else "note"
    return {
        row.key: (int(row.rows), SeenError(row.last_error, row.at, source, bool(row.held)))
        for row in conn.execute(select(ranked).where(ranked.c.rank == 1))
    }


def _call_error(status: UpstreamStatus | None, since: datetime | None) -> SeenError | None:
    if status is None or status.last_error is None or status.last_error_at is None:
        return None
    if since is not None and status.last_error_at < since and not status.failures:
        return None
    return SeenError(status.last_error, status.last_error_at, "call")


def _latest(call: SeenError | None, *rows: SeenError | None) -> SeenError | None:
    """Return the newest error; at the same time, the call's (the exactly dated one).

    A row's error met while its upstream was paused names the pause ("Zendesk paused
    (Zendesk answered 429)"): the call's error that caused it says it better.
    """
    seen = [call, *(e for e in rows if e is not None and not (e.paused and call is not None))]
    errors = [e for e in seen if e is not None]
    return max(errors, key=lambda e: e.at) if errors else None
