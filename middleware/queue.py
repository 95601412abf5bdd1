"""Leased work queues on a table: claim, finish, retry with backoff, dead-letter, replay.

Both the inbox (deliveries) and the outbox (writes) are such queues. A worker claims rows
with a lease; a row whose lease ran out (its worker was killed) is claimed again. On
PostgreSQL, claims use FOR UPDATE SKIP LOCKED so workers on several hosts share the queue.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, Table, or_, select, update

from middleware.store import dumps, utcnow

DEAD = "dead"
DONE = "done"
PENDING = "pending"


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Return the wait before retry number `attempts` (exponential, capped, with jitter)."""
    return min(cap, base * 2 ** max(0, attempts - 1)) * random.uniform(0.8, 1.2)


class LeasedQueue:
    """A table used as a work queue with leases."""

    def __init__(
        self,
        engine: Engine,
        table: Table,
        ready: Sequence[str] = (PENDING,),
        replay_as: str = PENDING,
    ) -> None:
        self.engine = engine
        self.table = table
        self.ready = tuple(ready)
        self.replay_as = replay_as

    def claim(self, owner: str, lease_s: float, limit: int = 10) -> list[Row]:
        """Lease up to `limit` due rows to `owner` and return them."""
        t = self.table
        now = utcnow()
        with self.engine.begin() as conn:
            query = (
                select(t.c.id)
                .where(
                    t.c.status.in_(self.ready),
                    t.c.next_attempt_at <= now,
                    or_(t.c.lease_expires_at.is_(None), t.c.lease_expires_at < now),
                )
                .order_by(t.c.next_attempt_at, t.c.id)
                .limit(limit)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(conn.execute(query).scalars())
            if not ids:
                return []
            conn.execute(
                update(t)
                .where(t.c.id.in_(ids))
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s))
            )
            return list(conn.execute(select(t).where(t.c.id.in_(ids)).order_by(t.c.id)))

    def settle(self, row_id: int, owner: str, **values: Any) -> bool:
        """Update a leased row and drop the lease; False when the lease was lost."""
        t = self.table
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t)
                .where(t.c.id == row_id, t.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None, **values)
            )
            return bool(result.rowcount)

    def touch(self, row_id: int, owner: str, **values: Any) -> bool:
        """Update a leased row and keep the lease; False when the lease was lost."""
        t = self.table
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t).where(t.c.id == row_id, t.c.lease_owner == owner).values(**values)
            )
            return bool(result.rowcount)

    def retry_later(
        self,
        row: Row,
        owner: str,
        error: str,
        *,
        max_attempts: int,
        base_s: float,
        cap_s: float,
        after_s: float | None = None,
        count_attempt: bool = True,
        **values: Any,
    ) -> str:
        """Schedule another try (or dead-letter the row after max_attempts); return the status."""
        attempts = row.attempts + (1 if count_attempt else 0)
        if count_attempt and attempts >= max_attempts:
            self.settle(row.id, owner, status=DEAD, attempts=attempts, last_error=error, **values)
            return DEAD
        wait = after_s if after_s is not None else backoff_seconds(attempts, base_s, cap_s)
        self.settle(
            row.id,
            owner,
            attempts=attempts,
            last_error=error,
            next_attempt_at=utcnow() + timedelta(seconds=wait),
            **values,
        )
        return values.get("status", row.status)

    def replay(self, ids: Sequence[int] | None = None) -> int:
        """Put rows (or every dead row when ids is None) back in the queue; return the count."""
        t = self.table
        query = update(t).values(
            status=self.replay_as, attempts=0, next_attempt_at=utcnow(), lease_owner=None,
            lease_expires_at=None,
        )  # fmt: skip
        query = query.where(t.c.status == DEAD) if ids is None else query.where(t.c.id.in_(ids))
        with self.engine.begin() as conn:
            return int(conn.execute(query).rowcount)

    def next_due(self) -> datetime | None:
        """Return when the earliest ready row becomes due."""
        t = self.table
        with self.engine.begin() as conn:
            return conn.execute(
                select(t.c.next_attempt_at)
                .where(t.c.status.in_(self.ready))
                .order_by(t.c.next_attempt_at)
                .limit(1)
            ).scalar()


def add_trail(trail_json: str, step: str, detail: str = "") -> str:
    """Append one step to a row's processing trail."""
    trail = json.loads(trail_json or "[]")
    trail.append({"at": utcnow().isoformat(timespec="milliseconds") + "Z", "step": step,
                  "detail": detail})  # fmt: skip
    return dumps(trail)
