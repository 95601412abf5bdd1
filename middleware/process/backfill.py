"""Importing the history that already exists (`carryover backfill`).

A new installation knows nothing, so for weeks every ticket would be a "first contact". An
import reads the records of the past through each tool's API and runs them through the same
pipeline as webhooks (mapping, redaction, identity rules, timeline), with no note: nothing is
written to any tool, and only what arrives afterwards gets notes, which then name the past.

Progress lives in the store (history_imports): the counts with each batch of records, the
upstream's cursor with the last batch of each page. Killed, an import continues where it
stopped; run again, it skips every record it imported before in the same version
(history_keys), so nothing is imported twice.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select, text, update
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from middleware.customers.identity import KnownHolders, lock_identities
from middleware.errors import (
    InboundError,
    PermanentUpstreamError,
    RateLimited,
    UpstreamError,
)
from middleware.installation import Installation
from middleware.integrations.plugin import Capability, HistoryPage, InboundEvent, Plugin
from middleware.process.mapping import MappingError
from middleware.process.pipeline import Prepared, prepare_event, record_event
from middleware.store.tables import (
    dialect_insert,
    dumps,
    history_imports,
    history_keys,
    inserted_id,
    interactions,
    utcnow,
)

log = logging.getLogger(__name__)

RUNNING, DONE, STOPPED = "running", "done", "stopped"
STALE_S = 120  # a running import not heard of for this long was killed: another may resume it
# Records are committed in batches: few commits (SQLite syncs each to disk), yet a batch holds
# the store's write lock (SQLite) or the whole identity lock (PostgreSQL) only about BATCH_S,
# so webhooks arriving meanwhile wait no longer than that. The batch size follows its time.
BATCH_S = 0.05
FIRST_BATCH, MIN_BATCH, MAX_BATCH = 50, 10, 1000
MAX_TRIES = 5  # failures of one page in a row before the import stops
FIRST_BACKOFF_S = 2.0
KEYS_PER_QUERY = 500
HEARTBEAT_S = 10.0  # how often a waiting import says it is alive
MAX_REASON_CHARS = 200
BEGIN_LOCK = 7240016  # the PostgreSQL advisory lock that starting an import takes


class ImportBusy(Exception):
    """Another process is importing the same integration's history right now."""


@dataclass
class ImportState:
    """Where one import stands: what people see on the terminal and the admin page."""

    id: int
    plugin: str
    since: datetime
    status: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    imported: int = 0
    unchanged: int = 0
    skipped: int = 0
    refused: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    progress: float | None = None
    api_calls: int = 0
    last_error: str | None = None
    owner: str = ""  # host:pid of the process that runs (or ran) it
    waiting: str | None = None  # what the import waits for now (a rate limit), if anything

    @classmethod
    def of(cls, row: Row) -> ImportState:
        """Read an import's state from its row."""
        return cls(
            id=row.id, plugin=row.plugin, since=row.since, status=row.status,
            started_at=row.started_at, updated_at=row.updated_at, finished_at=row.finished_at,
            imported=row.imported, unchanged=row.unchanged, skipped=row.skipped,
            refused=row.refused, reasons=json.loads(row.reasons or "{}"),
            progress=row.progress, api_calls=row.api_calls, last_error=row.last_error,
            owner=row.owner,
        )  # fmt: skip

    @property
    def records(self) -> int:
        """Return how many records the import has read."""
        return self.imported + self.unchanged + self.skipped + self.refused

    @property
    def elapsed_s(self) -> float:
        """Return how long the import has run (until it finished)."""
        end = self.finished_at or self.updated_at
        return max((end - self.started_at).total_seconds(), 0.0)

    @property
    def rate(self) -> float | None:
        """Return records read per second, None before the first page."""
        return self.records / self.elapsed_s if self.records and self.elapsed_s > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Return the seconds left, judged by how far through the period the import is."""
        if self.status != RUNNING or not self.progress or self.progress >= 1:
            return None
        return self.elapsed_s * (1 - self.progress) / self.progress

    @property
    def is_live(self) -> bool:
        """Tell whether the import runs now: heard of recently, and not by a process of this
        host that is gone (killed, it is continued at once, not after STALE_S)."""
        age = (utcnow() - self.updated_at).total_seconds()
        return self.status == RUNNING and age < STALE_S and not _gone(self.owner)


def latest_import(conn: Connection, plugin: str) -> ImportState | None:
    """Return the newest import of an integration's history, None before the first."""
    row = conn.execute(
        select(history_imports)
        .where(history_imports.c.plugin == plugin)
        .order_by(history_imports.c.id.desc())
        .limit(1)
    ).first()
    return ImportState.of(row) if row else None


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """Read --since: a date (2026-01-31) or a number of days back (90d), as UTC midnight.

    Days back start at midnight, so that an import run again on the same day covers the same
    period and continues the one that was stopped.
    """
    now = now or utcnow()
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in ("d", "D"):
        days = int(text[:-1])
        if days > 36500:
            raise ValueError(f"{text!r}: more than a hundred years back")
        start = now - timedelta(days=days)
    else:
        try:
            start = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r}: expected a date (2026-01-31) or days back (90d)") from None
        if start.tzinfo is not None:
            start = start.astimezone(tz=None).replace(tzinfo=None)
    if start > now:
        raise ValueError(f"{text!r}: is in the future")
    return start.replace(hour=0, minute=0, second=0, microsecond=0)


def importable(core: Installation) -> list[Plugin]:
    """Return the configured integrations that can import their history, by key."""
    return [
        plugin
        for key, plugin in sorted(core.registry.instances.items())
        if plugin.has_capability(Capability.IMPORT_HISTORY)
    ]


class HistoryImport:
    """Import one integration's history since a date, resuming an import that was stopped."""

    def __init__(
        self,
        core: Installation,
        plugin: Plugin,
        since: datetime,
        *,
        on_progress: Callable[[ImportState], None] | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.core = core
        self.plugin = plugin
        self.since = since
        self.on_progress = on_progress or (lambda state: None)
        self.stopping = stopping or threading.Event()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"[:255]
        self.state: ImportState | None = None
        self.resumed = False
        self._cursor: str | None = None
        self._calls_at_start = 0
        self._batch = FIRST_BATCH  # records per transaction, adapted to BATCH_S

    # -- starting ----------------------------------------------------------------------------
    def begin(self) -> ImportState:
        """Start an import, or continue a stopped one that covers the period (ImportBusy)."""
        now = utcnow()
        with self.core.engine.begin() as conn:
            # Two imports starting at once must not both find none running: SQLite's
            # BEGIN IMMEDIATE already queues them; PostgreSQL takes a lock to the same end.
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": BEGIN_LOCK})
            latest = latest_import(conn, self.plugin.key)
            if latest is not None and latest.is_live:
                raise ImportBusy(
                    f"an import of {self.plugin.title} history is running (started "
                    f"{latest.started_at:%Y-%m-%d %H:%M} UTC); wait for it to finish"
                )
            if latest is not None and latest.status != DONE and latest.since <= self.since:
                conn.execute(
                    update(history_imports)
                    .where(history_imports.c.id == latest.id)
                    .values(status=RUNNING, owner=self.owner, updated_at=now, last_error=None)
                )
                self.resumed = True
                row_id = latest.id
            else:
                row_id = inserted_id(conn.execute(history_imports.insert().values(
                    plugin=self.plugin.key, since=self.since, status=RUNNING, owner=self.owner,
                    started_at=now, updated_at=now, imported=0, unchanged=0, skipped=0,
                    refused=0, reasons="{}", api_calls=0,
                )))  # fmt: skip
            row = conn.execute(select(history_imports).where(history_imports.c.id == row_id)).one()
        self.state = ImportState.of(row)
        self._cursor = row.cursor
        self._calls_at_start = self.plugin.api_calls()
        return self.state

    # -- running -----------------------------------------------------------------------------
    def run(self) -> ImportState:
        """Read and record every page until the end, a stop, or a failure; return the state."""
        state = self.state or self.begin()
        missing = [
            t for t in self.plugin.history_event_types
            if not self.core.mappings[self.plugin.key].handles(t)
        ]  # fmt: skip
        if missing:
            return self._finish(STOPPED, f"the {self.plugin.title} mapping in use has no "
                                f"{', '.join(missing)} event: restore it from the shipped "
                                "mapping (admin → Mappings)")  # fmt: skip
        failures = 0
        while True:
            try:
                for page in self.plugin.history(state.since, self._cursor):
                    self._record_page(page)
                    failures = 0
                    if page.done:
                        return self._finish(DONE)
                    if self.stopping.is_set():
                        return self._finish(STOPPED, "stopped before the end; run it again to "
                                            "continue")  # fmt: skip
                    left = self.plugin.history_budget_left()
                    if left is not None and left <= 0:
                        return self._finish(STOPPED, f"stopped to keep the rest of today's "
                                            f"{self.plugin.title} API budget for other uses; "
                                            "run it again tomorrow to continue")  # fmt: skip
                return self._finish(DONE)
            except RateLimited as exc:
                self._wait(exc.retry_after, f"{self.plugin.title} asked to wait")
            except PermanentUpstreamError as exc:
                return self._finish(STOPPED, str(exc))
            except UpstreamError as exc:
                failures += 1
                if failures >= MAX_TRIES:
                    return self._finish(STOPPED, f"{exc} ({failures} tries); run it again to "
                                        "continue")  # fmt: skip
                self._wait(FIRST_BACKOFF_S * 2 ** (failures - 1), f"{exc}; trying again")
            if self.stopping.is_set():
                return self._finish(STOPPED, "stopped before the end; run it again to continue")

    def _record_page(self, page: HistoryPage) -> None:
        """Record a page's new records in batches; its cursor goes with the last batch."""
        assert self.state is not None
        received = utcnow()
        seen = self._seen([e.key for e in page.events])
        counts: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for kind, passed in (("skipped", page.skipped), ("refused", page.refused)):
            for record, reason in passed:
                log.debug("%s history: %s %s: %s", self.plugin.title, kind, record, reason)
                counts[kind] += 1
                reasons[_reason(kind, reason)] += 1
        self.plugin.prefetch_history([e for e in page.events if e.key not in seen])
        ready: list[Prepared] = []
        for event in page.events:
            if event.key in seen:
                # Imported before: by an earlier import (unchanged since), or by this one
                # before it was stopped (already counted).
                counts["unchanged"] += seen[event.key] != self.state.id
                continue
            outcome = self._prepare(event, received)
            if isinstance(outcome, Prepared):
                ready.append(outcome)
            else:
                kind, reason = outcome
                counts[kind] += 1
                reasons[_reason(kind, reason)] += 1
        start = 0
        while True:
            batch = ready[start : start + self._batch]
            start += len(batch)
            last = start >= len(ready)
            began = time.monotonic()
            self._commit_batch(batch, counts if last else Counter(), reasons if last else Counter(),
                               page if last else None)  # fmt: skip
            if len(batch) >= MIN_BATCH:
                took = max(time.monotonic() - began, 1e-6)
                wanted = int(len(batch) * BATCH_S / took)
                self._batch = max(MIN_BATCH, min(MAX_BATCH, wanted, self._batch * 2))
            if last:
                return

    def _prepare(self, event: InboundEvent, received: datetime) -> Prepared | tuple[str, str]:
        """Map, redact and enrich a record; (skipped or refused, why) when it cannot be."""
        try:
            prepared = prepare_event(self.core, self.plugin, event, received)
        except (MappingError, InboundError) as exc:
            return "refused", str(exc)
        if isinstance(prepared, str):
            return "skipped", prepared.removeprefix(f"{event.key}: ")
        return prepared

    def _commit_batch(
        self,
        batch: Sequence[Prepared],
        counts: Counter[str],
        reasons: Counter[str],
        page: HistoryPage | None,
    ) -> None:
        """Record a batch in one transaction with its keys and counts (and the page's cursor).

        The batch is written in one go; should the store refuse one record's value, it is
        written again record by record, each in a savepoint, and the refused one counted.
        """
        try:
            topics = self._write_batch(batch, counts, reasons, page, careful=False)
        except SQLAlchemyError as exc:
            if not _refused_value(exc):
                raise
            topics = self._write_batch(batch, counts, reasons, page, careful=True)
        self.core.changed(topics)
        assert self.state is not None
        self.on_progress(self.state)

    def _write_batch(
        self,
        batch: Sequence[Prepared],
        counts: Counter[str],
        reasons: Counter[str],
        page: HistoryPage | None,
        *,
        careful: bool,
    ) -> set[str]:
        assert self.state is not None
        state = self.state
        topics: set[str] = set()
        counts = Counter(counts)
        reasons = Counter(reasons)
        keys: list[str] = []
        with self.core.engine.begin() as conn:
            # What the whole batch needs to know, read at once under the identity lock.
            known = KnownHolders()
            lock_identities(conn)
            known.locked = True
            known.load(conn, (i for prepared in batch for i in prepared.identities))
            stored = _stored_records(conn, batch)
            for prepared in batch:
                record = _record_id(prepared)
                absent = record is not None and record not in stored
                try:
                    with conn.begin_nested() if careful else nullcontext():
                        recorded = record_event(self.core, conn, self.plugin, prepared,
                                                notes=False, known=known,
                                                absent=absent)  # fmt: skip
                except SQLAlchemyError as exc:
                    if not careful or not _refused_value(exc):
                        raise
                    known.forget()
                    counts["refused"] += 1
                    reasons[_reason("refused", "the store refused a value")] += 1
                    continue
                if record is not None:
                    stored.add(record)
                counts["imported"] += 1
                keys.append(prepared.key)
                topics |= recorded.topics
            if keys:
                conn.execute(
                    dialect_insert(conn, history_keys).on_conflict_do_nothing(),
                    [{"plugin": self.plugin.key, "key": k, "import_id": state.id} for k in keys],
                )
            for name in ("imported", "unchanged", "skipped", "refused"):
                setattr(state, name, getattr(state, name) + counts[name])
            for reason, count in reasons.items():
                state.reasons[reason] = state.reasons.get(reason, 0) + count
            if page is not None:
                self._cursor = page.cursor
                if page.progress is not None:
                    state.progress = max(0.0, min(1.0, page.progress))
            self._save(conn, cursor=page is not None)
        return topics

    def _seen(self, keys: Iterable[str]) -> dict[str, int]:
        """Return which of the keys were imported before, with the import that did it."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, int] = {}
        query = select(history_keys.c.key, history_keys.c.import_id).where(
            history_keys.c.plugin == self.plugin.key,
            history_keys.c.key.in_(bindparam("keys", expanding=True)),
        )
        with self.core.engine.connect() as conn:
            for i in range(0, len(keys), KEYS_PER_QUERY):
                rows = conn.execute(query, {"keys": keys[i : i + KEYS_PER_QUERY]})
                found.update({row.key: row.import_id for row in rows})
        return found

    def _save(self, conn: Connection, *, cursor: bool, **extra: Any) -> None:
        """Write the state (and the cursor, once a page is wholly recorded) to the store."""
        assert self.state is not None
        state = self.state
        state.updated_at = utcnow()
        state.api_calls = self._api_calls()
        values: dict[str, Any] = {
            "updated_at": state.updated_at, "imported": state.imported,
            "unchanged": state.unchanged, "skipped": state.skipped, "refused": state.refused,
            "reasons": dumps(state.reasons), "progress": state.progress,
            "api_calls": state.api_calls, **extra,
        }  # fmt: skip
        if cursor:
            values["cursor"] = self._cursor
        conn.execute(
            update(history_imports).where(history_imports.c.id == state.id).values(**values)
        )

    def _api_calls(self) -> int:
        assert self.state is not None
        made = self.plugin.api_calls() - self._calls_at_start
        self._calls_at_start = self.plugin.api_calls()
        return self.state.api_calls + made

    def _wait(self, seconds: float, why: str) -> None:
        """Wait, saying why and staying alive in the store, unless asked to stop."""
        assert self.state is not None
        self.state.waiting = f"{why} ({seconds:.0f} s)"
        self.on_progress(self.state)
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.stopping.wait(min(left, HEARTBEAT_S))
            with self.core.engine.begin() as conn:
                self._save(conn, cursor=False)
        self.state.waiting = None

    def _finish(self, status: str, error: str | None = None) -> ImportState:
        """End the import as done or stopped (to be continued), with what stopped it."""
        assert self.state is not None
        state = self.state
        state.status, state.last_error, state.waiting = status, error, None
        state.finished_at = utcnow() if status == DONE else None
        if status == DONE:
            state.progress = 1.0
        with self.core.engine.begin() as conn:
            self._save(conn, cursor=False, status=status, last_error=error,
                       finished_at=state.finished_at)  # fmt: skip
        if error:
            log.warning("%s history import %s: %s", self.plugin.title, status, error)
        self.on_progress(state)
        return state


def _gone(owner: str) -> bool:
    """Tell whether the owner (host:pid) was a process of this host that no longer runs."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, and belongs to someone else
        return False
    return False


def _reason(kind: str, reason: str) -> str:
    """Group a record's reason with others of its kind, kept short."""
    text = " ".join(reason.split())
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1] + "…"
    return f"{kind}: {text}"


def _refused_value(exc: SQLAlchemyError) -> bool:
    """Tell whether the store refused one record's value (not the store failing)."""
    return isinstance(exc, DataError | IntegrityError)


def _record_id(prepared: Prepared) -> tuple[str, str, str] | None:
    """Return the timeline key (source, kind, external id) of a prepared record, if any."""
    item = prepared.interaction
    return (item.source, item.kind, item.external_id) if item is not None else None


def _stored_records(conn: Connection, batch: Sequence[Prepared]) -> set[tuple[str, str, str]]:
    """Return which of the batch's records the timeline holds already."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for prepared in batch:
        record = _record_id(prepared)
        if record is not None:
            wanted.setdefault(record[:2], []).append(record[2])
    found: set[tuple[str, str, str]] = set()
    for (source, kind), ids in wanted.items():
        for i in range(0, len(ids), KEYS_PER_QUERY):
            rows = conn.execute(_STORED, {"source": source, "kind": kind,
                                          "ids": ids[i : i + KEYS_PER_QUERY]})  # fmt: skip
            found |= {(source, kind, row.external_id) for row in rows}
    return found


_STORED = select(interactions.c.external_id).where(
    interactions.c.source == bindparam("source"),
    interactions.c.kind == bindparam("kind"),
    interactions.c.external_id.in_(bindparam("ids", expanding=True)),
)
