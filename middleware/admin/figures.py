"""The figures of the admin overview: traffic, lag, failures, and what the mission is about.

Lag counts the work that still waits, not only the work finished: during an outage the
finished work is the quick part (76 webhooks waiting 32 s read as "0.5 s" when only the
finished ones counted). Counts group in SQL; the customer figures walk the last 30 days of
contacts in Python, capped at CONTACTS_CAP rows so the overview stays quick on a large store.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from sqlalchemy import Connection, func, select

from middleware.customers.timeline import CONTACT_KINDS, ITEM_KINDS
from middleware.integrations.faults import (
    ERROR_WINDOW,
    WAITING_STATUSES,
    UpstreamFaults,
    read_faults,
)
from middleware.store.queue import PENDING
from middleware.store.tables import deliveries, interactions, utcnow, writes

TRAFFIC_MINUTES = 60
LAG_SAMPLE = 500
CONTACTS_CAP = 200_000
WINDOW_DAYS = 30
REPEAT_DAYS = 7
DAILY_DAYS = 14


@dataclass
class Figures:
    """Everything the overview shows."""

    minutes: list[str] = field(default_factory=list)  # "HH:MM" labels, oldest first
    traffic: dict[str, list[int]] = field(default_factory=dict)  # plugin → deliveries a minute
    lag_median_s: float | None = None  # over finished webhooks and those still waiting
    lag_max_s: float | None = None
    backlog: int = 0  # webhooks waiting
    oldest_pending_s: float | None = None
    notes_waiting: int = 0
    oldest_note_s: float | None = None
    dead_in: int = 0
    dead_out: int = 0
    upstreams: list[UpstreamFaults] = field(default_factory=list)
    customers_in_touch: int = 0
    repeat_rate: float | None = None
    switches_per_customer: float | None = None
    days: list[str] = field(default_factory=list)
    new_items: list[tuple[int, int]] = field(default_factory=list)  # (with context, without)
    context_share: float | None = None


def overview_figures(conn: Connection, upstreams: Iterable[str] = ()) -> Figures:
    """Compute the overview's figures from the store (and the faults of these upstreams)."""
    now = utcnow()
    figures = Figures()
    _fill_traffic(conn, figures, now)
    _fill_lag(conn, figures, now)
    _fill_failures(conn, figures, now)
    figures.upstreams = list(read_faults(conn, upstreams, now - ERROR_WINDOW).values())
    _fill_customers(conn, figures, now)
    _fill_context_share(conn, figures, now)
    return figures


def _minute(column: Any, conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        return func.to_char(func.date_trunc("minute", column), "HH24:MI")
    return func.strftime("%H:%M", column)


def _day(column: Any, conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)


def _fill_traffic(conn: Connection, figures: Figures, now: datetime) -> None:
    start = (now - timedelta(minutes=TRAFFIC_MINUTES - 1)).replace(second=0, microsecond=0)
    figures.minutes = [(start + timedelta(minutes=i)).strftime("%H:%M")
                       for i in range(TRAFFIC_MINUTES)]  # fmt: skip
    minute = _minute(deliveries.c.received_at, conn)
    rows = conn.execute(
        select(deliveries.c.plugin, minute, func.count())
        .where(deliveries.c.received_at >= start)
        .group_by(deliveries.c.plugin, minute)
    ).all()
    position = {label: i for i, label in enumerate(figures.minutes)}
    for plugin, label, count in rows:
        series = figures.traffic.setdefault(plugin, [0] * TRAFFIC_MINUTES)
        if label in position:
            series[position[label]] += int(count)


def _fill_lag(conn: Connection, figures: Figures, now: datetime) -> None:
    """Take the lag of the newest finished webhooks and the age of those still waiting."""
    done = conn.execute(
        select(deliveries.c.received_at, deliveries.c.finished_at)
        .where(deliveries.c.finished_at.is_not(None))
        .order_by(deliveries.c.id.desc()).limit(LAG_SAMPLE)
    ).all()  # fmt: skip
    waiting = conn.execute(
        select(deliveries.c.received_at).where(deliveries.c.status == PENDING)
        .order_by(deliveries.c.id.desc()).limit(LAG_SAMPLE)
    ).scalars()  # fmt: skip
    lags = [max(0.0, (r.finished_at - r.received_at).total_seconds()) for r in done]
    lags += [max(0.0, (now - received_at).total_seconds()) for received_at in waiting]
    backlog, oldest = conn.execute(
        select(func.count(), func.min(deliveries.c.received_at)).where(
            deliveries.c.status == PENDING)
    ).one()  # fmt: skip
    figures.backlog = int(backlog)
    figures.oldest_pending_s = max(0.0, (now - oldest).total_seconds()) if oldest else None
    if lags:  # the oldest waiting one may be older than the newest LAG_SAMPLE
        figures.lag_median_s = median(lags)
        figures.lag_max_s = max([*lags, figures.oldest_pending_s or 0.0])
    notes, oldest_note = conn.execute(
        select(func.count(), func.min(writes.c.created_at)).where(
            writes.c.status.in_(WAITING_STATUSES))
    ).one()  # fmt: skip
    figures.notes_waiting = int(notes)
    figures.oldest_note_s = max(0.0, (now - oldest_note).total_seconds()) if oldest_note else None


def _fill_failures(conn: Connection, figures: Figures, now: datetime) -> None:
    count = func.count()
    figures.dead_in = int(
        conn.execute(
            select(count).select_from(deliveries).where(deliveries.c.status == "dead")
        ).scalar()
        or 0
    )
    figures.dead_out = int(
        conn.execute(select(count).select_from(writes).where(writes.c.status == "dead")).scalar()
        or 0
    )


def _fill_customers(conn: Connection, figures: Figures, now: datetime) -> None:
    rows = conn.execute(
        select(interactions.c.customer_id, interactions.c.occurred_at, interactions.c.channel)
        .where(interactions.c.customer_id.is_not(None),
               interactions.c.kind.in_(CONTACT_KINDS),
               interactions.c.occurred_at >= now - timedelta(days=WINDOW_DAYS))
        .order_by(interactions.c.customer_id, interactions.c.occurred_at)
        .limit(CONTACTS_CAP)
    ).all()  # fmt: skip
    contacts: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    for customer_id, occurred_at, channel in rows:
        contacts[customer_id].append((occurred_at, channel))
    if not contacts:
        return
    came_back = switches = 0
    for history in contacts.values():
        gaps = [b[0] - a[0] for a, b in zip(history, history[1:], strict=False)]
        came_back += any(gap <= timedelta(days=REPEAT_DAYS) for gap in gaps)
        switches += sum(a[1] != b[1] for a, b in zip(history, history[1:], strict=False))
    figures.customers_in_touch = len(contacts)
    figures.repeat_rate = came_back / len(contacts)
    figures.switches_per_customer = switches / len(contacts)


def _fill_context_share(conn: Connection, figures: Figures, now: datetime) -> None:
    start = (now - timedelta(days=DAILY_DAYS - 1)).replace(hour=0, minute=0, second=0,
                                                           microsecond=0)  # fmt: skip
    figures.days = [(start + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(DAILY_DAYS)]
    day = _day(interactions.c.occurred_at, conn)
    noted = select(writes.c.interaction_id).where(writes.c.purpose == "summary")
    rows = conn.execute(
        select(day, interactions.c.id.in_(noted), func.count())
        .where(interactions.c.kind.in_(ITEM_KINDS), interactions.c.occurred_at >= start)
        .group_by(day, interactions.c.id.in_(noted))
    ).all()
    by_day = {d: [0, 0] for d in figures.days}
    for label, with_context, count in rows:
        if label in by_day:
            by_day[label][0 if with_context else 1] += int(count)
    figures.new_items = [(w, wo) for w, wo in by_day.values()]
    total = sum(w + wo for w, wo in figures.new_items)
    if total:
        figures.context_share = sum(w for w, _ in figures.new_items) / total
