"""The worker: claims deliveries and writes with a lease and carries them through.

Each upstream with an API gets a lane of its own (a thread that carries only the notes to
it), and one more lane carries the deliveries and the rest: a helpdesk that stalls holds up
its own work only, never another tool's notes or a call's screen-pop. Within a lane, the
upstream calls are many at once (see inflight.py): a slow API does not make the worker wait
for each answer in turn, and deliveries are recorded several at once, in one transaction.
A heartbeat renews the worker's short leases while it works, so another worker takes over
within seconds of a crash, never while this one is alive.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Row, select
from sqlalchemy.exc import SQLAlchemyError

from middleware.customers.retention import (
    PURGE_EVERY_S,
    Purged,
    purge,
    purge_due,
)
from middleware.errors import (
    InboundError,
    NotApplied,
    PermanentUpstreamError,
    RateLimited,
    UpstreamError,
)
from middleware.installation import Installation
from middleware.integrations.plugin import Capability, Plugin
from middleware.integrations.usage import ApiUsage, record_usage
from middleware.notes.outbox import ATTEMPTING
from middleware.process import liveness
from middleware.process.inflight import NamedLocks, UpstreamCalls, look_up
from middleware.process.mapping import MappingError
from middleware.process.pipeline import NotConfigured, Ready, prepare_delivery, record_deliveries
from middleware.store.queue import (
    DEAD,
    DONE,
    NOTE_BUDGET,
    PAUSED_UPSTREAM,
    PENDING,
    UNKNOWN_OUTCOME,
    Lane,
    LeasedQueue,
    LeaseLost,
    RetryPolicy,
    add_failure,
    add_trail,
)
from middleware.store.tables import interactions, utcnow
from middleware.throttled_log import ThrottledLog, store_error

log = logging.getLogger(__name__)
BATCH = 20
# Deliveries recorded in one transaction: one commit, one lock statement and one wake-up for
# them all. A store write lock (SQLite's) is held that much longer.
RECORDED_AT_ONCE = 10
GIVE_WAY_WINDOW_S = 0.1  # a webhook this recent means senders are waiting on this process
# Every process with a worker checks this often whether an hour passed since the last purge
# of any of them; the first check waits a little, so that a start is not slowed by it.
PURGE_CHECK_S = 300.0
PURGE_FIRST_AFTER_S = 60.0
MAX_LOGGED_ERROR = 300  # an error is kept whole in the store; the log line gets its start


def _log_processed(row: Row, outcome: str, busy_s: float, error: str | None, notes: int) -> None:
    """Log how processing a delivery ended: done, retried later (still pending) or dead."""
    said_outcome = outcome if outcome in (DONE, DEAD) else "retry"
    fields = {"delivery_id": row.id, "integration": row.plugin, "outcome": said_outcome,
              "duration_ms": round(busy_s * 1000, 1), "notes_queued": notes}  # fmt: skip
    if outcome == DONE:
        log.info("processed %s delivery in:%d in %.0f ms: done, %d note%s queued", row.plugin,
                 row.id, busy_s * 1000, notes, "" if notes == 1 else "s", extra=fields)  # fmt: skip
        return
    said = (error or "")[:MAX_LOGGED_ERROR]
    level, how = (logging.ERROR, "dead") if outcome == DEAD else (logging.WARNING, "retried later")
    log.log(level, "processed %s delivery in:%d in %.0f ms: %s: %s", row.plugin, row.id,
            busy_s * 1000, how, said, extra={**fields, "error": said})  # fmt: skip


@dataclass(frozen=True)
class Preparing:
    """A delivery made ready to record, and when its processing began."""

    ready: Ready
    started: float


class Worker:
    """Carry stored deliveries through the pipeline and queued notes to their upstream."""

    def __init__(self, core: Installation, name: str | None = None) -> None:
        self.core = core
        self.owner = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.settings = core.config.worker
        self.policy = RetryPolicy.from_settings(self.settings)
        self.stopping = threading.Event()
        self._recorded: dict[str, ApiUsage] = {}
        self._threads: list[threading.Thread] = []
        # One wake-up per lane thread: a webhook wakes them all, and notes queued by the
        # deliveries' lane wake the upstreams' lanes at once (see _nudge).
        self._wakes: dict[Lane, threading.Event] = {}
        self.faults = ThrottledLog(log)  # a store outage repeats a failure on every item
        self.calls = UpstreamCalls(self.settings["upstream_concurrency"])
        # A batch holds as many rows as can be in flight to one upstream, so that it keeps
        # the upstream busy; the deliveries claimed ahead are looked up while others are
        # processed (see _deliveries).
        self.batch = max(BATCH, self.calls.limit)
        self._ahead: list[tuple[Row, Future[UpstreamError | None] | None]] = []

    def lanes(self) -> list[Lane]:
        """Return one lane per upstream that takes notes, and one for deliveries and the rest."""
        upstreams = sorted(
            key
            for key, cls in self.core.registry.classes.items()
            if Capability.WRITE_NOTE in cls.capabilities
        )
        return [Lane(key) for key in upstreams] + [Lane(None, tuple(upstreams))]

    # -- one pass --------------------------------------------------------------------------
    def run_once(self, lane: Lane | None = None) -> int:
        """Process what is due now (in one lane, or all); return how many rows were handled.

        Deliveries are carried in the order they came, by the lane of no upstream: a call
        that follows a ticket is processed after it. A delivery whose upstream is paused or
        failing waits unclaimed, so a stalled upstream costs the deliveries at most one
        timeout; that upstream's own lane finds out when it is back (see _probe).
        """
        handled = 0
        if lane is None or lane.upstream is None:
            handled += self._deliveries()
            if handled:
                self._nudge()  # the notes they queued are for the upstreams' lanes
        paused = self._upstreams(paused_only=True)
        rows = self.core.outbox.claim(self.owner, self.settings["lease_s"], self.batch, lane,
                                      paused)  # fmt: skip
        self.calls.write_in_turn(rows, lambda row: self._timed(self._write, row))
        handled += len(rows)
        for plugin in self.core.registry.instances.values():
            if lane is None or lane.upstream == plugin.key:
                self._probe(plugin)
        if handled:
            self._record_usage()
        return handled

    def _deliveries(self) -> int:
        """Process due deliveries in the order they came; return how many.

        The next batch is claimed before this one is processed, and its lookups start at
        once: they are answered while this batch is processed, one delivery after the other.
        """
        rows = self._ahead or self._claim_deliveries()
        self._ahead = self._claim_deliveries() if rows else []
        group: list[Preparing] = []
        for row, lookups in rows:
            failed = None
            if lookups is not None:
                wait([lookups])  # never two lookups of one record at once
                failed = None if lookups.cancelled() else lookups.result()
            preparing = self._prepare(row, failed_ahead=failed)
            if preparing is not None:
                group.append(preparing)
            if len(group) == RECORDED_AT_ONCE:
                self._record(group)
                group = []
        if group:
            self._record(group)
        return len(rows)

    def _claim_deliveries(self) -> list[tuple[Row, Future[UpstreamError | None] | None]]:
        """Claim due deliveries and start looking up what they will need."""
        unwell = self._upstreams(paused_only=False)
        rows = self.core.inbox.claim(self.owner, self.settings["lease_s"], self.batch,
                                     skip=unwell)  # fmt: skip
        records = NamedLocks()
        return [(row, self._look_up(row, records)) for row in rows]

    def _look_up(self, row: Row, records: NamedLocks) -> Future[UpstreamError | None] | None:
        """Start the lookups a delivery will need on its upstream's pool (None: it needs none)."""
        plugin = self.core.registry.get(row.plugin)
        if plugin is None or not plugin.has_capability(Capability.ENRICH):
            return None
        return self.calls.submit(plugin.key, self._looked_up, plugin, row, records)

    def _looked_up(self, plugin: Plugin, row: Row, records: NamedLocks) -> UpstreamError | None:
        """Look up what a delivery needs; return the upstream's failure, if it failed.

        The processing takes that failure as its own (see _process): asking again would
        cost a second call for one try, and meet a pause the first call caused instead of
        the failure itself. Any other failure is met again by the processing, which handles it.
        """
        try:
            look_up(self.core, plugin, row, records)
        except UpstreamError as exc:
            return exc
        except Exception:  # processing meets the same failure, and handles it
            log.debug("looking up ahead for delivery %s failed", row.id, exc_info=True)
        return None

    def _timed(self, step: Any, row: Row) -> int:
        started = time.monotonic()
        step(row)
        self.give_way(time.monotonic() - started)
        return 1

    def _upstreams(self, paused_only: bool) -> list[str]:
        """Return the upstreams paused now (or also failing): their rows wait, unclaimed."""
        health = self.core.health
        return [
            key
            for key in self.core.registry.instances
            if health.paused_for(key) > 0 or (not paused_only and health.failing(key))
        ]

    def _probe(self, plugin: Plugin) -> None:
        """Call a failing upstream once its pause is over, to learn whether it is back.

        Its deliveries wait while it fails, and it may have no note to write: without a
        probe nothing would ever call it again.
        """
        health = self.core.health
        if not health.failing(plugin.key) or health.paused_for(plugin.key) > 0:
            return
        try:
            plugin.check_connection()
        except UpstreamError as exc:
            self.faults.log(logging.INFO, f"probe:{plugin.key}", "%s is still failing: %s",
                            plugin.title, exc)  # fmt: skip

    def _record_usage(self) -> None:
        """Keep the API usage upstreams reported during this pass, for /readyz."""
        for plugin in self.core.registry.instances.values():
            usage = plugin.api_usage()
            if usage is None or self._recorded.get(plugin.key) == usage:
                continue
            try:
                record_usage(self.core.engine, plugin.key, usage)
            except SQLAlchemyError:
                self.faults.log(logging.WARNING, "usage", "could not record %s API usage",
                                plugin.key)  # fmt: skip
                continue
            self._recorded[plugin.key] = usage

    def drain(self, rounds: int = 50) -> int:
        """Run passes until nothing is due (for tests and one-shot runs); return the total."""
        total = 0
        for _ in range(rounds):
            handled = self.run_once()
            total += handled
            if not handled:
                break
        return total

    def give_way(self, busy_s: float) -> None:
        """Pause as long as the last item took while webhooks arrive in this process.

        Web threads and an embedded worker share one interpreter lock: a worker that never
        paused would keep senders waiting for their acknowledgement (senders give up after
        a few seconds) while it works through a backlog. Acknowledging comes first; the work
        waits, and nothing is lost. A worker in a process of its own sees no webhooks and never
        pauses.
        """
        if time.monotonic() - self.core.webhook_seen_at < GIVE_WAY_WINDOW_S:
            self.stopping.wait(busy_s)

    def _unexpected(self, exc: Exception, message: str, *args: Any) -> None:
        """Log a failure that is no upstream's: a store outage in one line, a bug with its trace.

        Either repeats for every item while it lasts, so each kind is logged once a window.
        """
        if isinstance(exc, SQLAlchemyError):
            self.faults.log(logging.WARNING, "store", message + ": %s", *args, store_error(exc))
        else:
            self.faults.log(logging.ERROR, type(exc).__name__, message, *args, exc_info=True)

    def _renew(self, queue: LeasedQueue, row: Row, **values: Any) -> bool:
        """Extend this worker's lease on a row; False when another worker has taken it over.

        With nothing else to change, a lease that has more than half its time left as claimed
        is not renewed: no other worker can claim the row before it runs out, the heartbeat
        extends it meanwhile, and the settle checks it again.
        """
        lease_s = self.settings["lease_s"]
        now = utcnow()
        left = row.lease_expires_at - now if row.lease_owner == self.owner else None
        if not values and left is not None and left > timedelta(seconds=lease_s / 2):
            return True
        if queue.touch(row.id, self.owner, lease_expires_at=now + timedelta(seconds=lease_s),
                       **values):  # fmt: skip
            return True
        log.warning("%s %s: lease ran out and was taken over; leaving it", queue.table.name, row.id)
        return False

    # -- deliveries ------------------------------------------------------------------------
    def _process(self, row: Row, failed_ahead: UpstreamError | None = None) -> None:
        """Process one delivery on its own; failed_ahead: how its lookups made ahead failed."""
        ready = self._prepare(row, failed_ahead)
        if ready is not None:
            self._record([ready])

    def _prepare(self, row: Row, failed_ahead: UpstreamError | None = None) -> Preparing | None:
        """Make a delivery ready to record; None when it is not (its failure is settled here,
        or its lease was taken over)."""
        if not self._renew(self.core.inbox, row):  # claimed in a batch: its lease may have run out
            return None
        started = time.monotonic()
        try:
            if failed_ahead is not None:
                raise failed_ahead  # this try's call to the upstream, made ahead
            return Preparing(prepare_delivery(self.core, row), started)
        except Exception as exc:
            self._failed(row, exc, started)
            return None
        finally:
            self.give_way(time.monotonic() - started)

    def _record(self, group: list[Preparing]) -> None:
        """Record deliveries made ready in one transaction, each settled in it as done.

        When that fails, each is recorded on its own: one delivery's failure stays its own.
        """
        started = time.monotonic()
        try:
            queued = record_deliveries(self.core, [p.ready for p in group], self._finish)
        except Exception as exc:
            if len(group) == 1:
                self._failed(group[0].ready.row, exc, group[0].started)
            else:
                log.debug("recording %d deliveries at once failed; one by one", len(group),
                          exc_info=True)  # fmt: skip
                for preparing in group:
                    self._record([preparing])
            return
        finally:
            self.give_way(time.monotonic() - started)
        for preparing, notes in zip(group, queued, strict=True):
            row = preparing.ready.row
            self.core.metrics.notes_queued(notes, row.received_at)
            _log_processed(row, DONE, time.monotonic() - preparing.started, None, len(notes))

    def _finish(self, conn: Connection, recorded: list[tuple[Row, list[str]]]) -> None:
        """Settle deliveries as done with what they recorded, in the transaction that recorded
        them; LeaseLost when another worker took one over (then nothing commits)."""
        now = utcnow()
        settled = []
        for row, steps in recorded:
            trail = row.trail
            for step in steps or ["no events"]:
                trail = add_trail(trail, "processed", step)
            settled.append((row.id, {"status": DONE, "finished_at": now, "trail": trail,
                                     "last_error": None, "failing_since": None,
                                     "waiting_for": None}))  # fmt: skip
        if not self.core.inbox.settle_all_in(conn, self.owner, settled):
            raise LeaseLost(", ".join(str(row.id) for row, _ in recorded))

    def _failed(self, row: Row, exc: Exception, started: float) -> None:
        """Settle a delivery whose processing failed: dead, or retried later."""
        inbox = self.core.inbox
        error = str(exc)
        if isinstance(exc, LeaseLost):
            log.warning("%s %s: lease ran out and was taken over; leaving it", inbox.table.name,
                        row.id)  # fmt: skip
            return
        if isinstance(exc, RateLimited):  # its upstream is paused: nothing was sent
            outcome = inbox.retry_later(row, self.owner, error, self.policy, transient=True,
                                        after_s=exc.retry_after, count_attempt=False,
                                        waiting_for=PAUSED_UPSTREAM)  # fmt: skip
        elif isinstance(exc, MappingError | InboundError | NotConfigured | PermanentUpstreamError):
            inbox.settle(row.id, self.owner, status=DEAD, last_error=error,
                         trail=add_failure(row.trail, error), attempts=row.attempts + 1,
                         waiting_for=None)  # fmt: skip
            outcome = DEAD
        elif isinstance(exc, UpstreamError):
            outcome = inbox.retry_later(row, self.owner, error, self.policy, transient=True,
                                        trail=add_failure(row.trail, error))  # fmt: skip
        else:  # never let one delivery stop the worker
            self._unexpected(exc, "delivery %s failed", row.id)
            error = f"{type(exc).__name__}: {exc}"
            outcome = inbox.retry_later(row, self.owner, error, self.policy, transient=False,
                                        trail=add_failure(row.trail, error))  # fmt: skip
        _log_processed(row, outcome, time.monotonic() - started, error, 0)

    # -- notes -----------------------------------------------------------------------------
    def _write(self, row: Row) -> None:
        """Write one note exactly once: look before writing again, reserve before writing.

        A write that got an answer is settled by it. One that got none (a read timeout, a
        dropped connection, a 5xx) may still be applied by the upstream after we stopped
        waiting, so it stays ATTEMPTING and is looked for upstream only after
        `unknown_outcome_grace_s`; only a marker still missing then lets it be written again.
        """
        outbox = self.core.outbox
        plugin = self.core.registry.get(row.target)
        if plugin is None:
            outbox.retry_later(row, self.owner, f"integration {row.target!r} is not configured",
                               self.policy, transient=True)  # fmt: skip
            return
        grace = self.settings["unknown_outcome_grace_s"]
        attempted = False
        try:
            if row.status == ATTEMPTING:
                settled_at = row.attempted_at and row.attempted_at + timedelta(seconds=grace)
                if settled_at and utcnow() < settled_at:  # taken over from a worker that died
                    outbox.settle(row.id, self.owner, next_attempt_at=settled_at,
                                  waiting_for=UNKNOWN_OUTCOME)  # fmt: skip
                    return
                if plugin.note_exists(row.target_ref, row.marker):
                    self._written(row, found=True)
                    return
            budget = plugin.write_budget_per_minute()
            wait = self.core.health.reserve_write(row.target, budget) if budget else 0.0
            if wait:  # a throttle of our own, not a failure: no error, no attempt
                due = utcnow() + timedelta(seconds=wait)
                outbox.settle(row.id, self.owner, next_attempt_at=due, waiting_for=NOTE_BUDGET)
                return
            # Never write on a lease another worker took over: it may be writing the same note.
            if not self._renew(outbox, row, status=ATTEMPTING, attempted_at=utcnow()):
                return
            attempted = True
            plugin.write_note(row.target_ref, row.body)
        except RateLimited as exc:
            # Refused for the rate limit (or not sent, paused): the write did not happen. On the
            # marker check, the row stays as it was: the check is still owed.
            outbox.retry_later(row, self.owner, str(exc), self.policy, transient=True,
                               after_s=exc.retry_after, count_attempt=False,
                               waiting_for=PAUSED_UPSTREAM,
                               **self._not_written(attempted))  # fmt: skip
        except NotApplied as exc:
            outbox.retry_later(row, self.owner, str(exc), self.policy, transient=True,
                               **self._not_written(attempted))  # fmt: skip
        except PermanentUpstreamError as exc:
            outbox.settle(row.id, self.owner, status=DEAD, last_error=str(exc),
                          attempts=row.attempts + 1, waiting_for=None,
                          attempted_at=None if attempted else row.attempted_at)  # fmt: skip
        except Exception as exc:  # never let one write stop the worker
            transient = isinstance(exc, UpstreamError)
            if not transient:
                self._unexpected(exc, "write %s failed", row.id)
            error = str(exc) if transient else f"{type(exc).__name__}: {exc}"
            if attempted:  # no answer is not a "no": look for the note after the grace
                error += f"; looking for the note upstream after {grace:g}s"
                outbox.retry_later(row, self.owner, error, self.policy, transient=transient,
                                   after_s=grace, waiting_for=UNKNOWN_OUTCOME)  # fmt: skip
            else:
                outbox.retry_later(row, self.owner, error, self.policy, transient=transient)
        else:
            self._written(row)

    @staticmethod
    def _not_written(attempted: bool) -> dict[str, Any]:
        """Return what a definite "no" to a write changes: nothing is pending upstream.

        A refusal on the marker check (not attempted) changes nothing: the check is owed.
        """
        if not attempted:
            return {}
        return {"status": PENDING, "attempted_at": None}

    def _written(self, row: Row, found: bool = False) -> None:
        """Settle a note written (or found written upstream), time it and log it."""
        self.core.outbox.settle(row.id, self.owner, status=DONE, done_at=utcnow(), last_error=None,
                                failing_since=None, waiting_for=None)  # fmt: skip
        seconds = self.core.metrics.note_written(row.target, row.id, row.created_at)
        if not log.isEnabledFor(logging.INFO):
            return
        customer_id = self._customer_of(row.interaction_id)
        how = "found already written on" if found else "written to"
        log.info(
            "note out:%d %s %s %s for customer %s, %.1f s after its webhook", row.id, how,
            row.target, row.target_ref, customer_id or "unknown", seconds,
            extra={"write_id": row.id, "integration": row.target, "target_ref": row.target_ref,
                   "customer_id": customer_id, "purpose": row.purpose, "found_upstream": found,
                   "latency_s": round(seconds, 3)},
        )  # fmt: skip

    def _customer_of(self, interaction_id: int) -> int | None:
        """Return the customer of a note's interaction, for the log (None if unknown)."""
        try:
            with self.core.engine.connect() as conn:
                found = conn.execute(
                    select(interactions.c.customer_id).where(interactions.c.id == interaction_id)
                ).scalar()
        except SQLAlchemyError:
            return None
        return int(found) if found is not None else None

    # -- the loop ----------------------------------------------------------------------------
    def run_forever(self, lane: Lane | None = None) -> None:
        """Process (one lane, or all) until stop() is called, waking when a delivery arrives."""
        interval = self.settings["poll_interval_s"]
        while not self.stopping.is_set():
            try:
                handled = self.run_once(lane)
            except Exception as exc:  # the store may be briefly unreachable; keep going
                self._unexpected(exc, "worker pass failed")
                handled = 0
            if not handled:
                wake = self._wakes.get(lane, self.core.wake) if lane else self.core.wake
                wake.wait(interval)
                wake.clear()
        if lane is None or lane.upstream is None:
            self._release_ahead()

    def _release_ahead(self) -> None:
        """Give back the deliveries claimed ahead, so that another worker takes them at once."""
        for row, _lookups in self._ahead:
            try:
                self.core.inbox.settle(row.id, self.owner)
            except SQLAlchemyError:  # their leases run out instead, in lease_s
                break
        self._ahead = []

    def _nudge(self) -> None:
        """Wake every lane thread."""
        for wake in self._wakes.values():
            wake.set()

    def _relay(self) -> None:
        """Pass each wake-up of the installation (a webhook stored) on to every lane."""
        while not self.stopping.is_set():
            if self.core.wake.wait(self.settings["poll_interval_s"]):
                self.core.wake.clear()
                self._nudge()

    def heartbeat(self) -> None:
        """Say this worker is alive, at once and then every beat until stop(), renewing its
        leases so that none runs out while it is alive."""
        lease_s = self.settings["lease_s"]
        while True:
            try:
                self.core.inbox.renew_all(self.owner, lease_s)
                self.core.outbox.renew_all(self.owner, lease_s)
                liveness.beat(self.core, self.owner, self.stopping)
            except SQLAlchemyError as exc:
                self.faults.log(logging.WARNING, "renew", "could not renew leases: %s",
                                store_error(exc))  # fmt: skip
            if self.stopping.wait(liveness.heartbeat_s(lease_s)):
                return

    def purge_when_due(self, every_s: float = PURGE_EVERY_S) -> Purged | None:
        """Purge what is past the retention periods, unless a process did within every_s.

        It runs even when both periods keep everything: expired cached look-ups go anyway.
        """
        retention = self.core.config.retention
        if not purge_due(self.core.engine, utcnow(), every_s):
            return None
        removed = purge(self.core.engine, retention, stopping=self.stopping)
        if removed.total:
            log.info("purged %d raw webhooks, %d timeline items, %d notes and %d customers past "
                     "the retention periods", removed.deliveries, removed.timeline_items,
                     removed.notes, removed.customers)  # fmt: skip
        return removed

    def purging(self) -> None:
        """Purge every PURGE_EVERY_S until stop(), the first time soon after the start."""
        wait = PURGE_FIRST_AFTER_S
        while not self.stopping.wait(wait):
            wait = PURGE_CHECK_S
            try:
                self.purge_when_due()
            except SQLAlchemyError as exc:
                self.faults.log(logging.WARNING, "purge", "could not purge old data: %s",
                                store_error(exc))  # fmt: skip
            except Exception as exc:  # a bug: said, and tried again at the next check
                self._unexpected(exc, "purge failed")

    def start(self) -> list[threading.Thread]:
        """Run one daemon thread per lane, the heartbeat, and the purge."""
        self._wakes = {lane: threading.Event() for lane in self.lanes()}
        self._threads.append(
            threading.Thread(target=self._relay, name="carryover-wake", daemon=True)
        )
        for lane in self._wakes:
            name = f"carryover-worker-{lane.upstream or 'other'}"
            self._threads.append(threading.Thread(target=self.run_forever, args=(lane,),
                                                  name=name, daemon=True))  # fmt: skip
        self._threads.append(
            threading.Thread(target=self.heartbeat, name="carryover-heartbeat", daemon=True)
        )
        self._threads.append(
            threading.Thread(target=self.purging, name="carryover-purge", daemon=True)
        )
        for thread in self._threads:
            thread.start()
        return list(self._threads)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the threads start() began."""
        for thread in self._threads:
            thread.join(timeout)

    def stop(self) -> None:
        """Ask every lane to finish its pass and return; start no upstream call not started."""
        self.stopping.set()
        self.calls.close()
        self.core.wake.set()
        self._nudge()
        liveness.farewell(self.core, self.owner)
