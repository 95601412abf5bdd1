"""Leased work queues on a table: claim, finish, retry with backoff, dead-letter, replay.

Both the inbox (deliveries) and the outbox (writes) are such queues. A worker claims rows
with a short lease and renews it while it works; a row whose lease ran out (its worker was
killed) is claimed again within seconds. On PostgreSQL, claims use FOR UPDATE SKIP LOCKED
so workers on several hosts share the queue.

Retries go by time, not count: an upstream outage of hours must not turn waiting work into
dead letters. A transient failure (5xx, timeout, no connection) is retried with capped
backoff for `retry_for_s` from the first failure in a row; a refusal (404, 422) is a dead
letter at once; a failure of Carryover itself (a bug) after `max_attempts`.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Table,
    Update,
    bindparam,
    func,
    or_,
    select,
    true,
    update,
)

from middleware.store.tables import dumps, reading, utcnow
from middleware.store.together import Together

log = logging.getLogger(__name__)

DEAD = "dead"
DONE = "done"
PENDING = "pending"
# What holds a waiting row back besides its own backoff (the waiting_for column).
PAUSED_UPSTREAM = "pause"  # its upstream is paused (429, or 5xx and timeouts in a row)
NOTE_BUDGET = "budget"  # the upstream's notes-per-minute budget is used up
UNKNOWN_OUTCOME = "outcome"  # a write got no answer: it is looked for upstream after a grace
FAILED_STEP = "failed"
FAILED_TRIES_KEPT = 10  # the trail keeps the last few failed tries, not each of a long outage


class LeaseLost(Exception):
    """Another worker took a row over: what this one did for it must not be committed."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often failed work is tried again."""

    retry_for_s: float
    max_attempts: int
    base_s: float
    cap_s: float

    @classmethod
    def from_settings(cls, worker: Mapping[str, Any]) -> RetryPolicy:
        """Read the policy from the worker settings."""
        return cls(worker["retry_for_s"], worker["max_attempts"], worker["backoff_base_s"],
                   worker["backoff_max_s"])  # fmt: skip


@dataclass(frozen=True)
class Lane:
    """The rows one worker thread carries: one upstream's, or every row of no other lane."""

    upstream: str | None
    others: tuple[str, ...] = ()

    def clause(self, column: Any) -> ColumnElement[bool]:
        """Return the condition that selects this lane's rows by their plugin or target."""
        if self.upstream is not None:
            return column == self.upstream  # type: ignore[no-any-return]
        return column.not_in(self.others) if self.others else true()  # type: ignore[no-any-return]


Leased = tuple[int, str, dict[str, Any]]  # a row's id, its lease owner, the values it gets


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Return the wait before retry number `attempts` (exponential, capped, with jitter)."""
    return min(cap, base * 2 ** max(0, attempts - 1)) * random.uniform(0.8, 1.2)


class LeasedQueue:
    """A table used as a work queue with leases."""

    def __init__(
        self,
        engine: Engine,
        table: Table,
        lane_column: str,
        ready: Sequence[str] = (PENDING,),
        replay_as: str = PENDING,
    ) -> None:
        self.engine = engine
        self.table = table
        self.lane_column = table.c[lane_column]  # the plugin or target that names its upstream
        self.ready = tuple(ready)
        self.replay_as = replay_as
        # Built once per set of updated columns: building a statement costs more than running it.
        self._leased_updates: dict[tuple[str, ...], Update] = {}
        # Rows settled (or touched) by several threads at once share one transaction.
        self._updates = Together(self._update_all)

    def claim(
        self,
        owner: str,
        lease_s: float,
        limit: int = 10,
        lane: Lane | None = None,
        skip: Sequence[str] = (),
    ) -> list[Row]:
        """Lease up to `limit` due rows to `owner` and return them in the order they came.

        Only rows of the lane if one is given, and none of the upstreams in `skip`. One
        UPDATE … RETURNING leases and reads them (SQLite 3.35+, PostgreSQL).
        """
        t = self.table
        now = utcnow()
        due = (
            select(t.c.id)
            .where(
                t.c.status.in_(self.ready),
                t.c.next_attempt_at <= now,
                or_(t.c.lease_expires_at.is_(None), t.c.lease_expires_at < now),
                lane.clause(self.lane_column) if lane is not None else true(),
                self.lane_column.not_in(skip) if skip else true(),
            )
            .order_by(t.c.next_attempt_at, t.c.id)
            .limit(limit)
        )
        lease = {"lease_owner": owner, "lease_expires_at": now + timedelta(seconds=lease_s)}
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            if not conn.dialect.update_returning:  # an SQLite older than 3.35
                ids = list(conn.execute(due).scalars())
                if not ids:
                    return []
                conn.execute(update(t).where(t.c.id.in_(ids)).values(lease))
                return list(conn.execute(select(t).where(t.c.id.in_(ids)).order_by(t.c.id)))
            leased = update(t).where(t.c.id.in_(due.scalar_subquery())).values(lease)
            return sorted(conn.execute(leased.returning(*t.c)), key=lambda row: int(row.id))

    def settle(self, row_id: int, owner: str, **values: Any) -> bool:
        """Update a leased row and drop the lease; False when the lease was lost."""
        values.update(lease_owner=None, lease_expires_at=None)
        return self._update(row_id, owner, values)

    def settle_in(self, conn: Connection, row_id: int, owner: str, **values: Any) -> bool:
        """Settle a leased row in the caller's transaction; False when the lease was lost.

        The work the row stood for commits with its settlement, or neither does.
        """
        return self.settle_all_in(conn, owner, [(row_id, values)])

    def settle_all_in(self, conn: Connection, owner: str, settled: list[tuple[int, dict]]) -> bool:
        """Settle leased rows in the caller's transaction, each with its own values, in one
        statement per set of columns; False when `owner` lost the lease of any of them."""
        dropped = {"lease_owner": None, "lease_expires_at": None}
        return self._update_together(conn, [(row_id, owner, values | dropped)
                                            for row_id, values in settled])  # fmt: skip

    def touch(self, row_id: int, owner: str, **values: Any) -> bool:
        """Update a leased row and keep the lease; False when the lease was lost."""
        return self._update(row_id, owner, values)

    def _update(self, row_id: int, owner: str, values: dict[str, Any]) -> bool:
        """Update a leased row in a transaction of its own, or one shared with the rows other
        threads update at the same time (see _update_all); raise what the store raised."""
        answer = self._updates((row_id, owner, values))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _update_all(self, wanted: list[Leased]) -> list[bool | Exception]:
        """Update rows several threads asked for at once, in one transaction: one statement
        per set of columns, sent once. Say for each whether its lease was still held.

        If a lease was lost or the transaction failed (a deadlock with another worker's),
        nothing of it is kept, and each row is updated on its own: one row's answer or
        failure stays its own.
        """
        if len(wanted) > 1:
            try:
                with self.engine.begin() as conn:
                    if not self._update_together(conn, wanted):
                        raise LeaseLost(", ".join(str(row_id) for row_id, _, _ in wanted))
                return [True] * len(wanted)
            except Exception:
                log.debug("updating %d %s rows at once failed; one by one", len(wanted),
                          self.table.name, exc_info=True)  # fmt: skip
        answers: list[bool | Exception] = []
        for row_id, owner, values in wanted:
            try:
                with self.engine.begin() as conn:
                    answers.append(self._update_together(conn, [(row_id, owner, values)]))
            except Exception as exc:
                answers.append(exc)
        return answers

    def _update_together(self, conn: Connection, wanted: list[Leased]) -> bool:
        """Update rows only while `owner` holds their leases, in id order (two workers lock
        rows they share in the same order), with statements built once; return whether every
        lease was still held."""
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row_id, owner, values in sorted(wanted, key=lambda leased: leased[0]):
            parameters = {f"new_{name}": value for name, value in values.items()}
            by_columns.setdefault(tuple(sorted(values)), []).append(
                {"row_id": row_id, "owner": owner, **parameters}
            )
        held = sum(
            conn.execute(self._statement_for(names), many).rowcount
            for names, many in by_columns.items()
        )
        return held == len(wanted)

    def _statement_for(self, names: tuple[str, ...]) -> Any:
        """Return the UPDATE of these columns (sorted) of a row `owner` leases (built once)."""
        statement = self._leased_updates.get(names)
        if statement is None:
            t = self.table
            statement = (
                update(t)
                .where(t.c.id == bindparam("row_id"), t.c.lease_owner == bindparam("owner"))
                .values({name: bindparam(f"new_{name}") for name in names})
            )
            self._leased_updates[names] = statement
        return statement

    def renew_all(self, owner: str, lease_s: float) -> int:
        """Extend every lease `owner` holds (its heartbeat); return how many."""
        t = self.table
        until = utcnow() + timedelta(seconds=lease_s)
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t).where(t.c.lease_owner == owner).values(lease_expires_at=until)
            )
            return int(result.rowcount)

    def retry_later(
        self,
        row: Row,
        owner: str,
        error: str | None,
        policy: RetryPolicy,
        *,
        transient: bool,
        after_s: float | None = None,
        count_attempt: bool = True,
        **values: Any,
    ) -> str:
        """Schedule another try, or dead-letter the row; return its status.

        A transient failure is retried until `retry_for_s` have passed since the first
        failure in a row; any other until `max_attempts`.
        """
        now = utcnow()
        attempts = row.attempts + (1 if count_attempt else 0)
        failing_since = row.failing_since or now
        values.setdefault("waiting_for", None)
        if transient:
            given_up = (now - failing_since).total_seconds() >= policy.retry_for_s
        else:
            given_up = count_attempt and attempts >= policy.max_attempts
        if given_up:
            values.update(status=DEAD, waiting_for=None)
        else:
            wait = after_s if after_s is not None else backoff_seconds(
                attempts, policy.base_s, policy.cap_s
            )  # fmt: skip
            values["next_attempt_at"] = now + timedelta(seconds=wait)
        self.settle(row.id, owner, attempts=attempts, last_error=error,
                    failing_since=failing_since, **values)  # fmt: skip
        return str(values.get("status", row.status))

    def existing(self, ids: Sequence[int]) -> set[int]:
        """Return which of the ids are rows of this queue."""
        t = self.table
        with self.engine.connect() as conn:
            return set(conn.execute(select(t.c.id).where(t.c.id.in_(ids))).scalars())

    def replay(self, ids: Sequence[int] | None = None) -> int:
        """Put rows (or every dead row when ids is None) back in the queue; return the count."""
        t = self.table
        query = update(t).values(
            status=self.replay_as, attempts=0, next_attempt_at=utcnow(), lease_owner=None,
            lease_expires_at=None, failing_since=None, waiting_for=None,
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

    def newest(
        self, conn: Connection, upstream: str = "", status: str = "", limit: int = 100
    ) -> list[Row]:
        """Return the newest rows, optionally of one upstream (plugin or target) and status."""
        t = self.table
        query = select(t).order_by(t.c.id.desc()).limit(limit)
        if upstream:
            query = query.where(self.lane_column == upstream)
        if status:
            query = query.where(t.c.status == status)
        return list(conn.execute(query))

    def listing(self, status: str | None = None, limit: int = 50) -> list[Row]:
        """Return the newest rows, optionally of one status, in a read of their own."""
        with reading(self.engine) as conn:
            return self.newest(conn, status=status or "", limit=limit)

    def stored(self, conn: Connection, row_id: int) -> Row | None:
        """Return one row as stored, or None."""
        return conn.execute(select(self.table).where(self.table.c.id == row_id)).first()

    def count_by_status(self, conn: Connection) -> dict[str, int]:
        """Count the rows of each status."""
        t = self.table
        query = select(t.c.status, func.count()).group_by(t.c.status)
        return {str(status): int(count) for status, count in conn.execute(query)}

    def dead_count(self, conn: Connection) -> int:
        """Count the dead letters."""
        t = self.table
        query = select(func.count()).select_from(t).where(t.c.status == DEAD)
        return int(conn.execute(query).scalar() or 0)


def add_trail(trail_json: str, step: str, detail: str = "") -> str:
    """Append one step to a row's processing trail."""
    trail = json.loads(trail_json or "[]")
    trail.append({"at": utcnow().isoformat(timespec="milliseconds") + "Z", "step": step,
                  "detail": detail})  # fmt: skip
    return dumps(trail)


def add_failure(trail_json: str, error: str, keep: int = FAILED_TRIES_KEPT) -> str:
    """Append a failed try to a row's trail, keeping only the last `keep` failed tries."""
    trail = json.loads(add_trail(trail_json, FAILED_STEP, error))
    failed = [i for i, entry in enumerate(trail) if entry.get("step") == FAILED_STEP]
    dropped = set(failed[:-keep]) if len(failed) > keep else set()
    return dumps([entry for i, entry in enumerate(trail) if i not in dropped])


def status_words(status: str, attempts: int) -> str:
    """Say where a row stands: "done", "pending, not tried yet", "dead, 1 failed try"."""
    if not attempts:
        return f"{status}, not tried yet" if status == PENDING else status
    tries = f"{attempts} failed tr{'y' if attempts == 1 else 'ies'}"
    return f"{status}, after {tries}" if status == DONE else f"{status}, {tries}"
