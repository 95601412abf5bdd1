"""The worker: claims deliveries and writes with a lease and carries them through."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import Row
from sqlalchemy.exc import SQLAlchemyError

from middleware.core import Carryover
from middleware.delivery import ATTEMPTING
from middleware.errors import (
    InboundError,
    PermanentUpstreamError,
    RateLimited,
    UpstreamError,
)
from middleware.mapping import MappingError
from middleware.pipeline import NotConfigured, process_delivery
from middleware.queue import DEAD, DONE, PENDING, LeasedQueue, add_trail
from middleware.store import utcnow
from middleware.usage import ApiUsage, record_usage

log = logging.getLogger(__name__)
BATCH = 20
GIVE_WAY_WINDOW_S = 0.1  # a webhook this recent means senders are waiting on this process


class Worker:
    """Carry stored deliveries through the pipeline and queued notes to their upstream."""

    def __init__(self, core: Carryover, name: str | None = None) -> None:
        self.core = core
        self.owner = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.settings = core.config.worker
        self.stopping = threading.Event()
        self._recorded: dict[str, ApiUsage] = {}

    # -- one pass --------------------------------------------------------------------------
    def run_once(self) -> int:
        """Process what is due now; return how many rows were handled."""
        handled = 0
        for row in self.core.inbox.claim(self.owner, self.settings["lease_s"], BATCH):
            started = time.monotonic()
            self._process(row)
            self.give_way(time.monotonic() - started)
            handled += 1
        for row in self.core.outbox.claim(self.owner, self.settings["lease_s"], BATCH):
            started = time.monotonic()
            self._write(row)
            self.give_way(time.monotonic() - started)
            handled += 1
        if handled:
            self._record_usage()
        return handled

    def _record_usage(self) -> None:
        """Keep the API usage upstreams reported during this pass, for /readyz."""
        for plugin in self.core.registry.instances.values():
            usage = plugin.api_usage()
            if usage is None or self._recorded.get(plugin.key) == usage:
                continue
            try:
                record_usage(self.core.engine, plugin.key, usage)
            except SQLAlchemyError:
                log.warning("could not record %s API usage", plugin.key, exc_info=True)
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
        paused would keep senders waiting for their acknowledgement (Zendesk gives up at
        12 s) while it works through a backlog. Acknowledging comes first; the work waits,
        and nothing is lost. A worker in a process of its own sees no webhooks and never
        pauses.
        """
        if time.monotonic() - self.core.webhook_seen_at < GIVE_WAY_WINDOW_S:
            self.stopping.wait(busy_s)

    def _retry_kwargs(self) -> dict[str, Any]:
        return {
            "max_attempts": self.settings["max_attempts"],
            "base_s": self.settings["backoff_base_s"],
            "cap_s": self.settings["backoff_max_s"],
        }

    def _renew(self, queue: LeasedQueue, row: Row, **values: Any) -> bool:
        """Extend this worker's lease on a row; False when another worker has taken it over."""
        until = utcnow() + timedelta(seconds=self.settings["lease_s"])
        if queue.touch(row.id, self.owner, lease_expires_at=until, **values):
            return True
        log.warning("%s %s: lease ran out and was taken over; leaving it", queue.table.name, row.id)
        return False

    def _process(self, row: Row) -> None:
        inbox = self.core.inbox
        if not self._renew(inbox, row):  # claimed in a batch: its lease may have run out
            return
        try:
            steps = process_delivery(self.core, row)
        except RateLimited as exc:
            inbox.retry_later(row, self.owner, str(exc), after_s=exc.retry_after,
                              count_attempt=False, **self._retry_kwargs())  # fmt: skip
        except (MappingError, InboundError, NotConfigured, PermanentUpstreamError) as exc:
            trail = add_trail(row.trail, "failed", str(exc))
            inbox.settle(row.id, self.owner, status=DEAD, last_error=str(exc), trail=trail,
                         attempts=row.attempts + 1)  # fmt: skip
        except UpstreamError as exc:
            inbox.retry_later(row, self.owner, str(exc), **self._retry_kwargs())
        except Exception as exc:  # never let one delivery stop the worker
            log.exception("delivery %s failed", row.id)
            inbox.retry_later(row, self.owner, f"{type(exc).__name__}: {exc}",
                              **self._retry_kwargs())  # fmt: skip
        else:
            trail = row.trail
            for step in steps or ["no events"]:
                trail = add_trail(trail, "processed", step)
            inbox.settle(row.id, self.owner, status=DONE, finished_at=utcnow(), trail=trail,
                         last_error=None)  # fmt: skip

    def _write(self, row: Row) -> None:
        outbox = self.core.outbox
        plugin = self.core.registry.get(row.target)
        if plugin is None:
            outbox.retry_later(row, self.owner, f"integration {row.target!r} is not configured",
                               **self._retry_kwargs())  # fmt: skip
            return
        attempted = False
        try:
            if row.status == ATTEMPTING and plugin.note_exists(row.target_ref, row.marker):
                outbox.settle(row.id, self.owner, status=DONE, done_at=utcnow(), last_error=None)
                return
            budget = plugin.write_budget_per_minute()
            if budget:
                used, oldest = outbox.recent_count(row.target)
                if used >= budget:
                    wait = 1.0
                    if oldest is not None:
                        wait = max(1.0, (oldest + timedelta(seconds=60) - utcnow()).total_seconds())
                    outbox.retry_later(row, self.owner, "write budget used up", after_s=wait,
                                       count_attempt=False, **self._retry_kwargs())  # fmt: skip
                    return
            # Never write on a lease another worker took over: it may be writing the same note.
            if not self._renew(outbox, row, status=ATTEMPTING):
                return
            attempted = True
            plugin.write_note(row.target_ref, row.body)
        except RateLimited as exc:
            # A 429 on the write means it did not happen: no upstream check needed next time.
            # A 429 on the marker check leaves the row as it was: the check is still owed.
            outbox.retry_later(
                row, self.owner, str(exc), after_s=exc.retry_after, count_attempt=False,
                status=PENDING if attempted else row.status, **self._retry_kwargs(),
            )  # fmt: skip
        except PermanentUpstreamError as exc:
            outbox.settle(row.id, self.owner, status=DEAD, last_error=str(exc),
                          attempts=row.attempts + 1)  # fmt: skip
        except UpstreamError as exc:
            outbox.retry_later(row, self.owner, str(exc), **self._retry_kwargs())
        except Exception as exc:  # never let one write stop the worker
            log.exception("write %s failed", row.id)
            outbox.retry_later(row, self.owner, f"{type(exc).__name__}: {exc}",
                               **self._retry_kwargs())  # fmt: skip
        else:
            outbox.settle(row.id, self.owner, status=DONE, done_at=utcnow(), last_error=None)

    # -- the loop ----------------------------------------------------------------------------
    def run_forever(self) -> None:
        """Process until stop() is called, waking early when a delivery arrives."""
        interval = self.settings["poll_interval_s"]
        while not self.stopping.is_set():
            try:
                handled = self.run_once()
            except Exception:  # the store may be briefly unreachable; keep going
                log.exception("worker pass failed")
                handled = 0
            if not handled:
                self.core.wake.wait(interval)
                self.core.wake.clear()

    def start(self) -> threading.Thread:
        """Run the loop in a daemon thread."""
        thread = threading.Thread(target=self.run_forever, name="carryover-worker", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Ask the loop to finish its pass and return."""
        self.stopping.set()
        self.core.wake.set()
