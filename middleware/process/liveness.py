"""Which workers are alive: each worker's heartbeat keeps a row of the workers table.

With workers in processes of their own, on several hosts, nothing else tells an operator
that they run. A worker's heartbeat (which renews its leases three times a lease) writes
its host, pid, first and latest beat; it counts as alive until three leases after its
latest beat, the time in which another worker would have taken its leases over. A worker
that stops cleanly removes its row; one killed leaves it, shown as silent, until a day
later a heartbeat of any worker forgets it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from middleware.store.tables import dialect_insert, utcnow, workers
from middleware.throttled_log import store_error

if TYPE_CHECKING:
    from middleware.installation import Installation

log = logging.getLogger(__name__)
HEARTBEATS_PER_LEASE = 3  # a lease survives two missed heartbeats (a slow store, a pause)
SILENT_AFTER_LEASES = 3  # a worker silent this many leases has stopped, hangs or lost the store
FORGOTTEN_AFTER = timedelta(days=1)  # a silent worker's row is kept this long, then deleted
EMBEDDED = "embedded"  # a worker thread inside a web process (`carryover serve`)
OWN_PROCESS = "worker"  # a process of its own (`carryover worker`)

# A beat and the farewell of a stopping worker never cross: a beat begun before stop() must
# not write the row again after the farewell removed it.
_writing = threading.Lock()
# The stores of the installations a web app of this process serves (an installation is not
# hashable; its engine is its own): their workers are embedded ones.
_served: weakref.WeakSet[Engine] = weakref.WeakSet()


@dataclass(frozen=True)
class WorkerSeen:
    """One worker as its heartbeats left it in the store."""

    name: str
    kind: str
    host: str
    pid: int
    started_at: datetime
    seen_at: datetime
    alive_until: datetime

    def alive(self, now: datetime) -> bool:
        """Tell whether the worker beat recently enough to count as running."""
        return self.alive_until >= now


def serve_web(core: Installation) -> None:
    """Note that a web app of this process serves the installation (its worker is embedded)."""
    _served.add(core.engine)


def heartbeat_s(lease_s: float) -> float:
    """Return how often a worker beats (and renews its leases)."""
    return lease_s / HEARTBEATS_PER_LEASE


def silent_after_s(lease_s: float) -> float:
    """Return how long after its latest beat a worker counts as silent."""
    return SILENT_AFTER_LEASES * lease_s


def beat(core: Installation, name: str, stopping: threading.Event) -> None:
    """Record that the worker is alive now, and forget workers silent for a day."""
    with _writing:
        if stopping.is_set():  # stopped while this beat waited: its farewell was said
            return
        now = utcnow()
        until = now + timedelta(seconds=silent_after_s(core.config.worker["lease_s"]))
        kind = EMBEDDED if core.engine in _served else OWN_PROCESS
        with core.engine.begin() as conn:
            row = dialect_insert(conn, workers).values(
                name=name, kind=kind, host=socket.gethostname(), pid=os.getpid(),
                started_at=now, seen_at=now, alive_until=until,
            )  # fmt: skip
            conn.execute(row.on_conflict_do_update(
                index_elements=[workers.c.name], set_={"seen_at": now, "alive_until": until}
            ))  # fmt: skip
            conn.execute(delete(workers).where(workers.c.seen_at < now - FORGOTTEN_AFTER))


def farewell(core: Installation, name: str) -> None:
    """Remove a stopping worker's row: a worker stopped on purpose is not missed."""
    with _writing:
        try:
            with core.engine.begin() as conn:
                conn.execute(delete(workers).where(workers.c.name == name))
        except SQLAlchemyError as exc:  # it goes silent instead, and is forgotten in a day
            log.warning("could not remove worker %s from the workers table: %s", name,
                        store_error(exc))  # fmt: skip


def workers_seen(conn: Connection) -> list[WorkerSeen]:
    """Return the workers of the last day, by host and pid."""
    rows = conn.execute(
        select(workers).order_by(workers.c.host, workers.c.pid, workers.c.name)
    ).all()  # fmt: skip
    return [WorkerSeen(**row._mapping) for row in rows]


def alive_count(conn: Connection, now: datetime) -> int:
    """Count the workers that beat within their last three leases."""
    found = conn.execute(select(func.count()).where(workers.c.alive_until >= now)).scalar()
    return int(found or 0)
