"""Upstream API usage: what each upstream last reported, kept in the store for /readyz."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from middleware.store.tables import dialect_insert, upstream_usage


@dataclass(frozen=True)
class ApiUsage:
    """How much of its API allocation an upstream says is used (e.g. api-usage=25/15000)."""

    used: int
    allowed: int
    seen_at: datetime


def record_usage(engine: Engine, target: str, usage: ApiUsage) -> None:
    """Keep the newest usage an upstream reported."""
    values = {"used": usage.used, "allowed": usage.allowed, "seen_at": usage.seen_at}
    statement = dialect_insert(engine, upstream_usage).values(target=target, **values)
    statement = statement.on_conflict_do_update(
        index_elements=[upstream_usage.c.target],
        set_=values,
        where=upstream_usage.c.seen_at <= usage.seen_at,
    )
    with engine.begin() as conn:
        conn.execute(statement)


def usage_report(conn: Connection) -> dict[str, dict[str, Any]]:
    """Return each upstream's last reported usage, for /readyz."""
    rows = conn.execute(select(upstream_usage).order_by(upstream_usage.c.target))
    return {
        row.target: {
            "api_usage": f"{row.used}/{row.allowed}",
            "share_used": round(row.used / row.allowed, 4) if row.allowed else None,
            "seen_at": row.seen_at.isoformat(timespec="seconds") + "Z",
        }
        for row in rows
    }
