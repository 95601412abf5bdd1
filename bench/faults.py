"""Faults across the whole topology: a web process and two workers on PostgreSQL, a bad Zendesk.

One `carryover serve` (worker.enabled false) and two `carryover worker` processes share a
PostgreSQL schema; the fake Zendesk runs in this process, threaded. Known requesters (each
has an earlier ticket, so every new ticket is due one summary note) open 1,000 new tickets
whose signed `ticket.created` deliveries arrive shuffled, a tenth of them twice. Meanwhile:

1. `kill -9` of a worker in the middle of a request to Zendesk (which answers slowly for
   that moment). Takeover: from the kill until another worker has finished a row the dead
   one held. Then the worker is started again, as a supervisor would.
2. Zendesk applies note writes after the client's timeout (reads are answered at once).
3. Zendesk answers every request 429 with Retry-After: how many requests reach it meanwhile.
4. Zendesk answers 503.
5. Zendesk stalls: every request is held past the client's timeout, then handled.
6. Recovery. Drain: from the end of the faults until every delivery and write is settled.

At the end every acknowledged delivery must be stored once and done, every note written
exactly once (no marker twice on a ticket, one note per new ticket), nothing dead.

`python -m bench faults` runs it and prints the figures; tests/process/test_fault_topology.py
runs it and asserts them (`Figures.failures()`).
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from sqlalchemy import Engine, func, or_, select, text
from sqlalchemy.engine import make_url

from bench.deliveries import HOOK_PATH, WEBHOOK_SECRET, load_fixture, signed_headers
from bench.report import fault_lines, latency_figures, progress, seconds_text
from bench.servers import HOST, ZENDESK_EMAIL, ZENDESK_TOKEN, Server, free_port
from devkit.simulators.zendesk import FakeZendesk
from middleware.config import WORKER
from middleware.notes.outbox import MARKER_PATTERN
from middleware.store.tables import deliveries, interactions, make_engine, metadata, upgrade, writes

# The worker settings the scenario asks for. Keys this Carryover does not know are left out
# (and reported), so the scenario runs on a worker with or without them.
# lease_s keeps its default: the takeover figure is what that default gives.
WORKER_SETTINGS: dict[str, Any] = {
    "poll_interval_s": 0.2,
    "backoff_base_s": 0.5,
    "backoff_max_s": 5.0,
    # Longer than the stall's hold and the late writes' delay: a write whose outcome is
    # unknown has landed by the time it is checked for.
    "unknown_outcome_grace_s": 4.0,
    "upstream_pause_max_s": 5.0,
}
ZENDESK_SETTINGS: dict[str, Any] = {
    "timeout_s": 1.0,  # short, so that stalls and late writes cost seconds, not minutes
    "ticket_updates_per_minute": 6000,  # a budget that is kept but never binds here
}

REQUESTERS = 200
TICKETS = 1000  # new tickets, each due one note
REPEATS = 100  # deliveries sent a second time (Zendesk retries; a sender duplicates)
FIRST_REQUESTER = 8447400000001
FIRST_INTRO_TICKET = 600001  # each requester's earlier ticket
FIRST_TICKET = 700001
SEED = 20250106

SEND_BEFORE_KILL_S = 4.0  # the kill comes halfway through
SLOW_AT_KILL_S = 0.5  # how slowly Zendesk answers at the kill (under the client's timeout)
RATE_LIMIT_S, RETRY_AFTER_S = 8.0, 2.0
UNAVAILABLE_S = 6.0
STALL_S, STALL_HOLD_S = 5.0, 2.0
LATE_S, LATE_DELAY_S = 5.0, 2.5
RECOVERY_SEND_S = 2.0
# Shares of the deliveries sent before the kill, during each fault and at recovery.
# Few arrive during the late writes, so that each worker has one or two writes at a time and
# comes back to a write soon after its timeout, before the write has landed.
SHARES = {
    "before kill": 0.25,
    "late writes": 0.02,
    "429": 0.25,
    "503": 0.18,
    "stall": 0.18,
    "recovery": 0.12,
}

INTRO_WAIT_S = 60.0
HOLD_WAIT_S = 10.0  # for the worker to be killed to hold a row
TAKEOVER_WAIT_S = 75.0  # longer than a 60 s lease, so a slow takeover is measured too
DRAIN_WAIT_S = 120.0
POLL_S = 0.05

# What the figures must show (the test asserts them).
TAKEOVER_LIMIT_S = 15.0
DRAIN_LIMIT_S = 60.0
TERMINAL = ("done", "dead")


def worker_settings(wanted: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Split the wanted worker settings into those this Carryover knows and those it does not."""
    wanted = WORKER_SETTINGS if wanted is None else wanted
    known = {key: value for key, value in wanted.items() if key in WORKER}
    return known, sorted(set(wanted) - set(known))


# -- the store ---------------------------------------------------------------------------------


@contextmanager
def fresh_schema(base_url: str, schema: str) -> Iterator[str]:
    """Make an empty, migrated PostgreSQL schema; yield its URL; drop it afterwards."""
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    admin = make_engine(base_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        engine = make_engine(rendered)
        upgrade(engine)
        engine.dispose()
        yield rendered
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def empty_tables(url: str) -> None:
    """Empty every table of a migrated store (as the test suite resets PostgreSQL)."""
    engine = make_engine(url)
    with engine.begin() as conn:
        names = ", ".join(t.name for t in metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


class Store:
    """Read the queues the processes share."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url)

    def statuses(self) -> tuple[dict[str, int], dict[str, int]]:
        """Return the status counts of deliveries and of writes."""
        with self.engine.connect() as conn:
            found = []
            for table in (deliveries, writes):
                query = select(table.c.status, func.count()).group_by(table.c.status)
                found.append({status: count for status, count in conn.execute(query)})
        return found[0], found[1]

    def tickets(self) -> int:
        """Return how many ticket interactions are stored."""
        query = select(func.count()).where(interactions.c.kind == "ticket")
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def held_by(self, pid: int) -> set[tuple[str, int]]:
        """Return the unsettled rows whose lease a process holds (its pid is in the owner)."""
        held: set[tuple[str, int]] = set()
        with self.engine.connect() as conn:
            for table in (deliveries, writes):
                owner = table.c.lease_owner
                query = select(table.c.id).where(
                    or_(owner.like(f"%:{pid}:%"), owner.like(f"%:{pid}")),
                    table.c.status.not_in(TERMINAL),
                )
                held |= {(table.name, row_id) for row_id in conn.execute(query).scalars()}
        return held

    def progress_of(self, rows: set[tuple[str, int]], pid: int) -> tuple[int, int]:
        """Return how many of the rows another process has claimed, and how many are settled."""
        claimed = settled = 0
        with self.engine.connect() as conn:
            for table in (deliveries, writes):
                ids = [row_id for name, row_id in rows if name == table.name]
                if not ids:
                    continue
                query = select(table.c.status, table.c.lease_owner).where(table.c.id.in_(ids))
                for status, owner in conn.execute(query):
                    settled += status in TERMINAL
                    others = owner is not None and str(pid) not in owner.split(":")
                    claimed += status in TERMINAL or others
        return claimed, settled

    def dispose(self) -> None:
        """Close the store's connections."""
        self.engine.dispose()


# -- the deliveries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One ticket.created event as Zendesk sends it (signed at each send)."""

    event_id: str
    ticket_id: int
    body: bytes


def ticket_created(ticket_id: int, requester_id: int, event_id: str, at: float) -> Delivery:
    """Return a ticket.created of the mail fixture for another ticket, requester and time."""
    payload = load_fixture("ticket_created__mail.json")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
    payload.update(id=event_id, subject=f"zen:ticket:{ticket_id}", time=f"{stamp}.000000000Z")
    payload["detail"].update(
        id=str(ticket_id),
        requester_id=str(requester_id),
        submitter_id=str(requester_id),
        created_at=f"{stamp}Z",
        updated_at=f"{stamp}Z",
        subject=f"Order question {ticket_id}",
    )
    return Delivery(event_id, ticket_id, json.dumps(payload, separators=(",", ":")).encode())


def requester_of(ticket_id: int, first: int) -> int:
    """Return the requester of a ticket: the tickets go round the requesters."""
    return FIRST_REQUESTER + (ticket_id - first) % REQUESTERS


def build_deliveries(rng: random.Random) -> tuple[list[Delivery], list[Delivery]]:
    """Return the earlier tickets' deliveries and the new ones' in sending order.

    The new tickets are shuffled (their event times are in ticket order) and REPEATS of them
    are sent again, each at a random later place: some right after, some minutes later.
    """
    now = time.time() - 3600

    def event_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    intro = [
        ticket_created(FIRST_INTRO_TICKET + i, FIRST_REQUESTER + i, event_id(), now + i)
        for i in range(REQUESTERS)
    ]
    new = [
        ticket_created(ticket, requester_of(ticket, FIRST_TICKET), event_id(), now + 600 + i)
        for i, ticket in enumerate(range(FIRST_TICKET, FIRST_TICKET + TICKETS))
    ]
    rng.shuffle(new)
    order = list(new)
    for original in rng.sample(new, REPEATS):
        after = order.index(original) + 1
        order.insert(rng.randint(after, len(order)), original)
    return intro, order


def seed_zendesk(fake: FakeZendesk) -> None:
    """Add the requesters and every ticket (earlier and new) to the fake Zendesk."""
    for i in range(REQUESTERS):
        requester = FIRST_REQUESTER + i
        fake.add_user(requester, f"Customer {i}", email=f"customer{i}@example.com")
        fake.add_ticket(FIRST_INTRO_TICKET + i, requester, "Earlier order", channel="email")
    for ticket in range(FIRST_TICKET, FIRST_TICKET + TICKETS):
        requester = requester_of(ticket, FIRST_TICKET)
        fake.add_ticket(ticket, requester, f"Order question {ticket}", channel="email")


class Sender:
    """Post deliveries to the web process from a thread, each batch paced over its time."""

    def __init__(self, url: str) -> None:
        self.url = url + HOOK_PATH
        self.sent = 0
        self.acknowledged: set[str] = set()
        self.refused: list[str] = []
        self.ack_s: list[float] = []
        self._batches: queue.Queue[tuple[list[Delivery], float] | None] = queue.Queue()
        self._pending = 0
        self._done = threading.Condition()
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-sender", daemon=True)
        self._thread.start()

    def send(self, batch: list[Delivery], over_s: float) -> None:
        """Send a batch evenly over over_s seconds, beginning now (returns at once)."""
        with self._done:
            self._pending += 1
        self._batches.put((batch, over_s))

    def wait(self, timeout: float) -> bool:
        """Wait until every batch given so far has been sent."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Stop sending (what is left of a batch is dropped) and end the thread."""
        self._aborted.set()
        self._batches.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with requests.Session() as session:
            while (item := self._batches.get()) is not None:
                batch, over_s = item
                started = time.monotonic()
                for index, delivery in enumerate(batch):
                    if self._aborted.is_set():
                        break
                    pause = started + index * over_s / len(batch) - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    self._post(session, delivery)
                with self._done:
                    self._pending -= 1
                    self._done.notify_all()

    def _post(self, session: requests.Session, delivery: Delivery) -> None:
        self.sent += 1
        headers = signed_headers(delivery.body)
        sent = time.monotonic()
        try:
            response = session.post(self.url, data=delivery.body, headers=headers, timeout=10)
        except requests.RequestException as exc:
            self.refused.append(f"{delivery.event_id}: {type(exc).__name__}")
            return
        self.ack_s.append(time.monotonic() - sent)
        if response.status_code == 200:
            self.acknowledged.add(delivery.event_id)
        else:
            self.refused.append(f"{delivery.event_id}: {response.status_code}")


# -- the processes -----------------------------------------------------------------------------


class Processes:
    """Start Carryover processes; stop every one still running on close (even after failure)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Server] = []

    def start(self, name: str, *args: str, port: int | None = None) -> Server:
        """Run `carryover <args>` as a subprocess with its output in <workdir>/<name>.log."""
        command = [sys.executable, "-m", "middleware.cli", *args]
        server = Server(name, command, port or 0, self.workdir)
        self.started.append(server)
        return server

    def close(self) -> None:
        """Stop every process still running (SIGTERM, then SIGKILL) and close the logs."""
        for server in self.started:
            server.stop()

    def died(self) -> list[str]:
        """Return the names and output of processes that exited unexpectedly."""
        return [
            f"{s.name} exited {s.process.returncode}:\n{s.log_tail()}"
            for s in self.started
            if s.process.poll() not in (None, -signal.SIGKILL)
        ]


def write_config(path: Path, database_url: str, worker: bool, fake_url: str) -> Path:
    """Write one process's config.yaml: the shared store, the fake Zendesk, the worker."""
    known, _ = worker_settings()
    config = {
        "database_url": database_url,
        "secret_key": "fault-scenario-secret-key-0123456789",
        "allow_private_upstreams": True,  # the fake Zendesk listens on 127.0.0.1
        "worker": {**known, "enabled": worker},
        "integrations": {
            "zendesk": {
                "url": fake_url,
                "email": ZENDESK_EMAIL,
                "api_token": ZENDESK_TOKEN,
                "webhook_secret": WEBHOOK_SECRET,
                **ZENDESK_SETTINGS,
            }
        },
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def wait_until(check: Callable[[], bool], timeout: float, step: float = POLL_S) -> float | None:
    """Poll until check() is true; return the seconds it took, or None after the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(step)
    return None


# -- the figures -------------------------------------------------------------------------------


@dataclass
class Window:
    """Requests that reached Zendesk while one fault was on."""

    seconds: float
    requests: int = 0
    puts: int = 0
    refused: int = 0

    @property
    def per_s(self) -> float:
        """Return the requests per second of the window."""
        return round(self.requests / self.seconds, 2) if self.seconds else 0.0


@dataclass
class Figures:
    """What the scenario measured and the end state it left."""

    left_out_settings: list[str]
    sent: int = 0
    acknowledged: int = 0
    refused: list[str] = field(default_factory=list)
    ack: dict[str, float] = field(default_factory=dict)  # p50 to max, ms
    echoes_unanswered: int = 0  # the notes' comment events the web process did not answer 2xx
    unique_deliveries: int = REQUESTERS + TICKETS
    deliveries: dict[str, int] = field(default_factory=dict)
    tickets: int = 0  # ticket interactions stored: one per ticket, however often it came
    writes: dict[str, int] = field(default_factory=dict)
    expected_notes: int = TICKETS
    notes: int = 0
    tickets_with_a_marker_twice: int = 0
    duplicate_notes: int = 0
    tickets_without_a_note: int = 0
    notes_on_earlier_tickets: int = 0
    held_at_kill: int = 0
    takeover_claim_s: float | None = None
    takeover_s: float | None = None
    takeover_all_s: float | None = None
    windows: dict[str, Window] = field(default_factory=dict)
    retry_after_s: float = RETRY_AFTER_S
    workers_during_faults: int = 2
    drain_s: float | None = None
    total_s: float = 0.0
    died: list[str] = field(default_factory=list)

    def rate_limited_allowed(self) -> int:
        """Return the requests a 429 window may see when every worker honours Retry-After.

        Per worker and per Retry-After period (and once at the start), one request for the
        notes and one for the deliveries' lookups; one request per waiting item is too many.
        """
        window = self.windows.get("429")
        periods = 1 + math.ceil((window.seconds if window else 0.0) / self.retry_after_s)
        return 2 * self.workers_during_faults * periods

    def failures(self, timed: bool = True) -> list[str]:
        """Return what the end state or the figures got wrong (empty when all is well).

        timed=False leaves out the time limits (takeover, drain): they are the benchmark's
        to report, since a loaded machine moves them; the test checks only that both happen.
        """
        found = [f"process died: {d}" for d in self.died]
        if self.refused or self.acknowledged != self.unique_deliveries:
            found.append(
                f"{self.acknowledged} of {self.unique_deliveries} deliveries "
                f"acknowledged; refused: {self.refused[:5]}"
            )
        if self.deliveries != {"done": self.unique_deliveries}:
            found.append(
                f"deliveries {self.deliveries}, expected all {self.unique_deliveries} done"
            )
        if self.tickets != self.unique_deliveries:
            found.append(f"{self.tickets} tickets stored for {self.unique_deliveries} tickets")
        if self.writes != {"done": self.expected_notes}:
            found.append(f"writes {self.writes}, expected all {self.expected_notes} done")
        if self.notes != self.expected_notes or self.tickets_with_a_marker_twice:
            found.append(
                f"{self.notes} notes for {self.expected_notes} tickets: "
                f"{self.tickets_with_a_marker_twice} tickets with a marker twice, "
                f"{self.tickets_without_a_note} without a note"
            )
        if self.notes_on_earlier_tickets:
            found.append(f"{self.notes_on_earlier_tickets} notes on first contacts")
        if self.held_at_kill == 0:
            found.append("the killed worker held no row: no takeover to measure")
        elif self.takeover_s is None or (timed and self.takeover_s > TAKEOVER_LIMIT_S):
            found.append(f"takeover {self.takeover_s} s after kill -9, limit {TAKEOVER_LIMIT_S} s")
        limited = self.windows.get("429")
        if limited and limited.requests > self.rate_limited_allowed():
            found.append(
                f"{limited.requests} requests in {limited.seconds:g} s of 429 "
                f"(Retry-After {self.retry_after_s:g} s), at most "
                f"{self.rate_limited_allowed()} expected"
            )
        if self.drain_s is None or (timed and self.drain_s > DRAIN_LIMIT_S):
            found.append(f"drain {self.drain_s} s after recovery, limit {DRAIN_LIMIT_S} s")
        return found

    def as_dict(self) -> dict[str, Any]:
        """Return the figures as JSON-ready values, with the checks that failed."""
        figures = asdict(self)
        for name, window in self.windows.items():
            figures["windows"][name]["per_s"] = window.per_s
        figures["rate_limited_allowed"] = self.rate_limited_allowed()
        return figures | {"failures": self.failures()}

    def render(self) -> list[str]:
        """Return the figures as report lines."""
        return fault_lines(self.as_dict())


def count_notes(fake: FakeZendesk, figures: Figures) -> None:
    """Count the notes on the new tickets, markers written twice, and notes where none is due."""
    for ticket in range(FIRST_TICKET, FIRST_TICKET + TICKETS):
        markers = Counter(
            m for note in fake.notes(ticket) for m in MARKER_PATTERN.findall(note["body"] or "")
        )
        notes = fake.notes(ticket)
        figures.notes += len(notes)
        figures.tickets_with_a_marker_twice += any(n > 1 for n in markers.values())
        figures.duplicate_notes += sum(n - 1 for n in markers.values())
        figures.tickets_without_a_note += not notes
    figures.notes_on_earlier_tickets = sum(
        len(fake.notes(FIRST_INTRO_TICKET + i)) for i in range(REQUESTERS)
    )


# -- the scenario ------------------------------------------------------------------------------


def run_scenario(database_url: str, workdir: Path, processes: Processes | None = None) -> Figures:
    """Run the scenario on an empty, migrated PostgreSQL store; return the figures.

    The Carryover processes are stopped before this returns; a test also gives its own
    `processes`, so that a fixture stops them whatever happens.
    """
    processes = processes or Processes(workdir)
    store = Store(database_url)
    try:
        with FakeZendesk(ZENDESK_EMAIL, ZENDESK_TOKEN) as fake:
            try:
                return Scenario(fake, store, processes, workdir).run()
            finally:
                processes.close()  # before the fake Zendesk goes away
    finally:
        store.dispose()


class Scenario:
    """The topology and the fake Zendesk, taken through the kill, the faults and recovery."""

    def __init__(
        self, fake: FakeZendesk, store: Store, processes: Processes, workdir: Path
    ) -> None:
        self.fake = fake
        self.store = store
        self.processes = processes
        self.workdir = workdir
        self.figures = Figures(left_out_settings=worker_settings()[1])
        self.intro, order = build_deliveries(random.Random(SEED))
        self.batches = split(order)
        self.worker_config = workdir / "worker.yaml"
        self.workers: list[Server] = []

    def run(self) -> Figures:
        """Start the processes, run every phase, and count what reached Zendesk."""
        started = time.monotonic()
        seed_zendesk(self.fake)
        sender = Sender(self.start_topology())
        try:
            self.introduce(sender)
            self.kill_a_worker(sender)
            for name, seconds, switch in fault_phases(self.fake):
                self.fault(sender, name, seconds, switch)
            self.recover(sender)
        finally:
            sender.close()
        self.count(sender)
        self.figures.total_s = round(time.monotonic() - started, 1)
        return self.figures

    def start_topology(self) -> str:
        """Start the web process and two workers; return the web process's URL."""
        url = store_url(self.store)
        web_config = write_config(self.workdir / "web.yaml", url, False, self.fake.url)
        write_config(self.worker_config, url, True, self.fake.url)
        port = free_port()
        web = self.processes.start("web", "serve", "--config", str(web_config), "--host", HOST,
                                   "--port", str(port), port=port)  # fmt: skip
        self.workers = [self.start_worker(f"worker-{n}") for n in (1, 2)]
        web.wait_ready()
        web_url = f"http://{HOST}:{port}"
        # Zendesk announces each note as a comment event: Carryover must ignore its own.
        self.fake.subscribe(web_url + HOOK_PATH, WEBHOOK_SECRET)
        return web_url

    def start_worker(self, name: str) -> Server:
        """Start a `carryover worker` process."""
        return self.processes.start(name, "worker", "--config", str(self.worker_config))

    def introduce(self, sender: Sender) -> None:
        """Send each requester's earlier ticket and wait until all are processed."""
        progress(f"faults: {REQUESTERS} requesters' earlier tickets, processed before the run")
        sender.send(self.intro, over_s=1.0)
        done = {"done": REQUESTERS}

        def processed() -> bool:
            self.check_alive()
            return self.store.statuses()[0] == done

        if wait_until(processed, INTRO_WAIT_S) is None:
            raise RuntimeError(f"earlier tickets not processed: {self.store.statuses()}")

    def check_alive(self) -> None:
        """Stop the run, with their output, when a process exited that should not have."""
        if died := self.processes.died():
            raise RuntimeError("\n".join(died))

    def kill_a_worker(self, sender: Sender) -> None:
        """Halfway through the first batch, kill -9 a worker mid-request; time the takeover."""
        progress(f"faults: {TICKETS} new tickets and {REPEATS} repeats, kill -9 of a worker")
        sender.send(self.batches["before kill"], SEND_BEFORE_KILL_S)
        time.sleep(SEND_BEFORE_KILL_S / 2)
        victim = self.workers[0]
        pid = victim.process.pid
        self.kill_mid_request(pid)
        killed = time.monotonic()
        victim.process.wait()
        held = self.store.held_by(pid)
        self.figures.held_at_kill = len(held)
        self.time_takeover(held, pid, killed)
        progress(
            f"faults: takeover after {seconds_text(self.figures.takeover_s)}; restarting the worker"
        )
        self.workers[0] = self.start_worker(f"{victim.name}-again")  # as a supervisor would
        sender.wait(SEND_BEFORE_KILL_S)

    def kill_mid_request(self, pid: int) -> None:
        """SIGKILL a worker once it holds a row, while Zendesk answers slowly (not too slowly)."""
        self.fake.delay_seconds = SLOW_AT_KILL_S  # every request in flight lasts long enough
        try:
            if wait_until(lambda: bool(self.store.held_by(pid)), HOLD_WAIT_S, 0.01) is None:
                progress(f"faults: the worker held no row within {HOLD_WAIT_S:g} s")
            os.kill(pid, signal.SIGKILL)
        finally:
            self.fake.delay_seconds = 0.0

    def time_takeover(self, held: set[tuple[str, int]], pid: int, killed: float) -> None:
        """Watch the rows the dead worker held until another worker has settled them all."""
        while held and time.monotonic() - killed < TAKEOVER_WAIT_S:
            claimed, settled = self.store.progress_of(held, pid)
            after = round(time.monotonic() - killed, 2)
            if claimed and self.figures.takeover_claim_s is None:
                self.figures.takeover_claim_s = after
            if settled and self.figures.takeover_s is None:
                self.figures.takeover_s = after
            if settled == len(held):
                self.figures.takeover_all_s = after
                return
            time.sleep(POLL_S)

    def fault(self, sender: Sender, name: str, seconds: float, switch: Callable[[], None]) -> None:
        """Turn one fault on for its time while deliveries keep coming; count the requests."""
        self.check_alive()
        progress(f"faults: {name} for {seconds:g} s")
        window_started = time.time()
        switch()
        sender.send(self.batches[name], seconds)
        time.sleep(seconds)
        traffic = self.fake.traffic(window_started, window_started + seconds)
        refused = traffic.rate_limited + traffic.unavailable
        self.figures.windows[name] = Window(seconds, traffic.api, traffic.puts, refused)

    def recover(self, sender: Sender) -> None:
        """Send the last batch to a healthy Zendesk and time the drain."""
        progress("faults: recovery, draining")
        recovered = time.monotonic()
        sender.send(self.batches["recovery"], RECOVERY_SEND_S)
        sender.wait(RECOVERY_SEND_S + 30)
        if wait_until(lambda: drained(self.store), DRAIN_WAIT_S, step=0.2) is not None:
            self.figures.drain_s = round(time.monotonic() - recovered, 1)
        # A write the fake still holds may yet land: wait out the longest hold.
        time.sleep(max(STALL_HOLD_S, LATE_DELAY_S))
        try:
            self.fake.wait_for_echoes(timeout=10)  # before the web process stops
        except TimeoutError as exc:
            progress(f"faults: {exc}")

    def count(self, sender: Sender) -> None:
        """Count what was acknowledged, stored, written, and which process died."""
        figures = self.figures
        figures.sent, figures.refused = sender.sent, sender.refused
        figures.acknowledged = len(sender.acknowledged)
        figures.ack = latency_figures(sender.ack_s) if sender.ack_s else {}
        figures.echoes_unanswered = sum(
            d.response is None or not 200 <= d.response.status_code < 300
            for d in self.fake.deliveries
            if d.event_type == "ticket.comment_added"
        )
        figures.deliveries, figures.writes = self.store.statuses()
        figures.tickets = self.store.tickets()
        count_notes(self.fake, figures)
        figures.died = self.processes.died()


def store_url(store: Store) -> str:
    """Return the URL of the store, password included (for the processes' config)."""
    return store.engine.url.render_as_string(hide_password=False)


def split(order: list[Delivery]) -> dict[str, list[Delivery]]:
    """Cut the sending order into the phases' batches, by SHARES."""
    batches: dict[str, list[Delivery]] = {}
    start = 0
    for index, (name, share) in enumerate(SHARES.items()):
        end = len(order) if index == len(SHARES) - 1 else start + round(share * len(order))
        batches[name] = order[start:end]
        start = end
    return batches


def fault_phases(fake: FakeZendesk) -> list[tuple[str, float, Callable[[], None]]]:
    """Return the faults in order: name, seconds, and the switch that turns it on."""
    return [
        ("late writes", LATE_S, lambda: fake.apply_late(LATE_DELAY_S, LATE_S)),
        ("429", RATE_LIMIT_S, lambda: fake.rate_limit(RATE_LIMIT_S, RETRY_AFTER_S)),
        ("503", UNAVAILABLE_S, lambda: fake.unavailable(UNAVAILABLE_S)),
        ("stall", STALL_S, lambda: fake.stall(STALL_S, STALL_HOLD_S)),
    ]


def drained(store: Store) -> bool:
    """Tell whether every delivery is stored and every delivery and write is settled."""
    found, written = store.statuses()
    every = sum(found.values()) == REQUESTERS + TICKETS
    return every and set(found) <= set(TERMINAL) and set(written) <= set(TERMINAL)


def faults_benchmark() -> dict[str, Any]:
    """Run the scenario on a schema of its own in CARRYOVER_TEST_DATABASE_URL's database."""
    base_url = os.environ.get("CARRYOVER_TEST_DATABASE_URL")
    if not base_url:
        raise SystemExit(
            "bench faults: set CARRYOVER_TEST_DATABASE_URL to a PostgreSQL database "
            "(the scenario makes a schema of its own there and drops it afterwards)"
        )
    schema = f"carryover_bench_faults_{os.getpid()}"
    with (
        tempfile.TemporaryDirectory(prefix="carryover-bench-faults-") as tmp,
        fresh_schema(base_url, schema) as url,
    ):
        figures = run_scenario(url, Path(tmp))
    return figures.as_dict()
