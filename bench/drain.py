"""Draining a burst: how fast `carryover worker` processes a backlog, and its CPU per delivery.

A web-only `carryover serve` stores a burst of signed deliveries while no worker runs: a
realistic mix of Zendesk tickets (of new requesters, and of known ones, which are due a
summary note), comments on those tickets, Twilio calls (ringing, then completed) and CTI
calls (newCall, then hangup) from the requesters' phones. The web process is stopped, then
one (or two) `carryover worker` processes are started and timed until every delivery is
settled. Notes go to the fake Zendesk of devkit/simulators, whose budget is lifted, so the
figure is Carryover's own cost.

The rate and the CPU are taken from the first settled delivery on (the worker's start-up,
imports and connections, is not the drain). The worker's CPU per delivery is compared with
a bare Flask request's (bench/serve_bare.py under the same server), measured in the same run.

`python -m bench drain` runs it on SQLite (1 worker) and, with CARRYOVER_TEST_DATABASE_URL
set, on PostgreSQL (1 and 2 workers, in a schema of its own, dropped afterwards).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
import yaml
from sqlalchemy import func, select

from bench.deliveries import WEBHOOK_SECRET, load_fixture, signed_headers
from bench.faults import Processes, fresh_schema, wait_until
from bench.load import closed_loop
from bench.report import median, progress
from bench.servers import CTI_SECRET, HOST, ZENDESK_EMAIL, ZENDESK_TOKEN, Server, free_port
from devkit.simulators.zendesk import FakeZendesk
from middleware.ingest import standard_webhooks
from middleware.store.queue import DEAD, PENDING
from middleware.store.tables import deliveries, make_engine
from plugins.twilio import sign as twilio_sign

BURST = 10_000
RUNS = 3
REQUESTERS = 500
FIRST_REQUESTER = 9100000000001
FIRST_TICKET = 900001
TWILIO_TOKEN = "bench-twilio-auth-token"
SENDERS = 4  # client threads storing the burst
BARE_CONNECTIONS = 4
BARE_S = 3.0
POLL_S = 0.1
DRAIN_WAIT_S = 1800.0
SEED = 20261207
GOAL_RATIO = 4.0  # worker CPU per delivery ÷ a bare request's CPU
# Of every ten deliveries: four tickets, two comments, two Twilio and two CTI callbacks.
MIX = ("ticket",) * 4 + ("comment",) * 2 + ("twilio",) * 2 + ("cti",) * 2


@dataclass(frozen=True)
class Delivery:
    """One request of the burst: its hook and body, signed when it is sent."""

    hook: str
    body: bytes
    form: list[tuple[str, str]] | None = None  # Twilio's parameters, signed over the URL


def phone_of(requester: int) -> str:
    """Return a requester's phone number (E.164, a 555-01xx number)."""
    return f"+1212555{requester % 10_000:04d}"


class Burst:
    """Build the burst's deliveries in order: each call reports its start, then its end."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.rng = rng
        self.tickets: list[tuple[int, int]] = []  # (ticket, requester) sent so far
        self.items: list[Delivery] = []
        while len(self.items) < size:
            getattr(self, f"_{rng.choice(MIX)}")()
        del self.items[size:]

    def _requester(self) -> int:
        return FIRST_REQUESTER + self.rng.randrange(REQUESTERS)

    def _ticket(self) -> None:
        ticket, requester = FIRST_TICKET + len(self.tickets), self._requester()
        self.tickets.append((ticket, requester))
        payload = load_fixture("ticket_created__mail.json")
        payload.update(id=str(uuid.uuid4()), subject=f"zen:ticket:{ticket}")
        who = str(requester)
        payload["detail"].update(
            id=str(ticket), requester_id=who, submitter_id=who, subject=f"Order {ticket}"
        )
        self.items.append(Delivery("/hooks/zendesk", json.dumps(payload).encode()))

    def _comment(self) -> None:
        if not self.tickets:
            self._ticket()
            return
        ticket, requester = self.rng.choice(self.tickets)
        payload = load_fixture("ticket_comment_added.json")
        payload.update(id=str(uuid.uuid4()), subject=f"zen:ticket:{ticket}")
        payload["detail"].update(id=str(ticket), requester_id=str(requester))
        author = dict(payload["event"]["comment"]["author"], id=str(requester))
        payload["event"]["comment"].update(id=str(self.rng.getrandbits(40)), author=author)
        self.items.append(Delivery("/hooks/zendesk", json.dumps(payload).encode()))

    def _twilio(self) -> None:
        sid = "CA" + uuid.uuid4().hex
        caller = phone_of(self._requester())
        for status in ("ringing", "completed"):
            fields = [("CallSid", sid), ("CallStatus", status), ("From", caller),
                      ("To", "+12125550100"), ("Direction", "inbound"),
                      ("AccountSid", "AC" + "0" * 32), ("ApiVersion", "2010-04-01")]  # fmt: skip
            if status == "completed":
                fields.append(("CallDuration", "95"))
            self.items.append(Delivery("/hooks/twilio", b"", fields))

    def _cti(self) -> None:
        call_id = str(uuid.uuid4())
        caller = phone_of(self._requester()).lstrip("+")
        for name in ("newCall", "hangup"):
            payload = load_fixture_cti(name)
            payload.update({"from": caller, "callId": call_id})
            self.items.append(Delivery("/hooks/cti", json.dumps(payload).encode()))


def load_fixture_cti(name: str) -> dict[str, Any]:
    """Return a CTI fixture as a dict."""
    path = Path(__file__).resolve().parent.parent / "plugins" / "cti" / "fixtures"
    return dict(json.loads((path / f"{name}.json").read_bytes()))


def seed_zendesk(fake: FakeZendesk, burst: Burst) -> None:
    """Add the requesters (with email and phone) and the burst's tickets to the fake Zendesk."""
    for i in range(REQUESTERS):
        requester = FIRST_REQUESTER + i
        fake.add_user(requester, f"Customer {i}", email=f"drain{i}@example.com",
                      phone=phone_of(requester))  # fmt: skip
    for ticket, requester in burst.tickets:
        fake.add_ticket(ticket, requester, f"Order {ticket}", channel="email")


def request_of(delivery: Delivery, base_url: str) -> tuple[bytes, dict[str, str]]:
    """Return the body and headers of a delivery, signed now as its sender signs."""
    if delivery.hook == "/hooks/zendesk":
        return delivery.body, signed_headers(delivery.body)
    if delivery.hook == "/hooks/cti":
        signed = standard_webhooks.headers(CTI_SECRET, "msg_" + uuid.uuid4().hex, delivery.body)
        return delivery.body, {"Content-Type": "application/json", **signed}
    assert delivery.form is not None
    signature = twilio_sign(TWILIO_TOKEN, base_url + delivery.hook, delivery.form)
    return urlencode(delivery.form).encode(), {
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature,
    }  # fmt: skip


def store_burst(burst: Burst, base_url: str) -> None:
    """Post the burst in order, from a few threads at once; fail unless each is acknowledged."""
    slices = [burst.items[i::SENDERS] for i in range(SENDERS)]
    refused: list[str] = []

    def send(items: list[Delivery]) -> None:
        with requests.Session() as session:
            for delivery in items:
                body, headers = request_of(delivery, base_url)
                answer = session.post(base_url + delivery.hook, data=body, headers=headers,
                                      timeout=30)  # fmt: skip
                if answer.status_code != 200:
                    refused.append(f"{delivery.hook} {answer.status_code} {answer.text[:200]}")

    threads = [threading.Thread(target=send, args=(items,)) for items in slices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if refused:
        raise RuntimeError(f"{len(refused)} deliveries refused, e.g. {refused[0]}")


def write_config(path: Path, database_url: str, fake_url: str, port: int) -> Path:
    """Write the config both processes read: the store, Zendesk (no budget), Twilio, CTI."""
    config = {
        "public_url": f"http://{HOST}:{port}",
        "database_url": database_url,
        "secret_key": "drain-benchmark-secret-key-0123456789",
        "allow_private_upstreams": True,  # the fake Zendesk listens on 127.0.0.1
        "worker": {"enabled": False},
        "integrations": {
            "zendesk": {"url": fake_url, "email": ZENDESK_EMAIL, "api_token": ZENDESK_TOKEN,
                        "webhook_secret": WEBHOOK_SECRET, "ticket_updates_per_minute": 0},
            "twilio": {"auth_token": TWILIO_TOKEN},
            "cti": {"secret": CTI_SECRET},
        },
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class Backlog:
    """Count the deliveries still waiting in the shared store."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)

    def statuses(self) -> dict[str, int]:
        """Return how many deliveries have each status."""
        query = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
        with self.engine.connect() as conn:
            return {str(status): int(count) for status, count in conn.execute(query)}

    def pending(self) -> int:
        """Return how many deliveries still wait."""
        return self.statuses().get(PENDING, 0)

    def dispose(self) -> None:
        """Close the connections."""
        self.engine.dispose()


def drain_once(url: str, workers: int, size: int, workdir: Path) -> dict[str, float]:
    """Store a burst, then time `workers` worker processes until none of it is pending."""
    processes = Processes(workdir)
    backlog = Backlog(url)
    burst = Burst(size, random.Random(SEED))
    try:
        with FakeZendesk(ZENDESK_EMAIL, ZENDESK_TOKEN) as fake:
            seed_zendesk(fake, burst)
            port = free_port()
            config = write_config(workdir / "drain.yaml", url, fake.url, port)
            web = processes.start("web", "serve", "--config", str(config), "--host", HOST,
                                  "--port", str(port), port=port)  # fmt: skip
            web.wait_ready()
            store_burst(burst, f"http://{HOST}:{port}")
            web.stop()
            stored = backlog.pending()
            figures = timed_drain(processes, backlog, config, workers)
            dead = backlog.statuses().get(DEAD, 0)
            return figures | {"stored": stored, "dead": dead}
    finally:
        processes.close()
        backlog.dispose()


def timed_drain(
    processes: Processes, backlog: Backlog, config: Path, workers: int
) -> dict[str, float]:
    """Start the workers; from the first settled delivery on, time the rest and their CPU."""
    worker_config = config.with_name("worker.yaml")
    settings = yaml.safe_load(config.read_text())
    settings["worker"]["enabled"] = True
    worker_config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    started = [processes.start(f"worker-{n}", "worker", "--config", str(worker_config))
               for n in range(1, workers + 1)]  # fmt: skip
    stored = backlog.pending()
    if wait_until(lambda: backlog.pending() < stored, 120.0, POLL_S) is None:
        raise RuntimeError("no worker settled a delivery:\n" + started[0].log_tail())
    first_waiting = backlog.pending()
    cpu_first, began = cpu_of(started), time.monotonic()
    if wait_until(lambda: backlog.pending() == 0, DRAIN_WAIT_S, POLL_S) is None:
        raise RuntimeError(f"not drained in {DRAIN_WAIT_S:g} s: {backlog.statuses()}")
    seconds, cpu = time.monotonic() - began, cpu_of(started) - cpu_first
    if died := [worker for worker in started if worker.process.poll() is not None]:
        raise RuntimeError(f"{died[0].name} exited:\n{died[0].log_tail()}")
    return {"per_s": first_waiting / seconds, "cpu_ms": 1000 * cpu / first_waiting,
            "timed": first_waiting}  # fmt: skip


def cpu_of(servers: list[Server]) -> float:
    """Return the CPU seconds the processes used so far, together."""
    return sum(server.cpu_seconds() for server in servers)


def bare_cpu_ms(workdir: Path) -> float:
    """Return the bare Flask server's CPU per request (ms), under a short closed loop."""
    bare = Server.bare(free_port(), workdir)
    try:
        bare.wait_ready()
        closed_loop(HOST, bare.port, BARE_CONNECTIONS, 1.0)  # warm-up
        before = bare.cpu_seconds()
        result = closed_loop(HOST, bare.port, BARE_CONNECTIONS, BARE_S)
        return 1000 * (bare.cpu_seconds() - before) / result.requests
    finally:
        bare.stop()


@contextmanager
def store(kind: str, workdir: Path, run: int) -> Iterator[str]:
    """Yield a fresh, empty store's URL: a SQLite file, or a PostgreSQL schema of its own."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'drain-{run}.db'}"
        return
    base = os.environ["CARRYOVER_TEST_DATABASE_URL"]
    with fresh_schema(base, f"bench_drain_{os.getpid()}") as url:
        yield url


def configurations() -> list[tuple[str, int]]:
    """Return the (store, workers) pairs to measure: PostgreSQL only when configured."""
    found = [("sqlite", 1)]
    if os.environ.get("CARRYOVER_TEST_DATABASE_URL"):
        found += [("postgresql", 1), ("postgresql", 2)]
    return found


def drain_benchmark(size: int = BURST, runs: int = RUNS) -> dict[str, Any]:
    """Benchmark 13: drain rate and worker CPU per delivery ÷ bare request CPU; medians."""
    results: dict[str, Any] = {"burst": size, "runs": runs, "goal_ratio": GOAL_RATIO}
    with tempfile.TemporaryDirectory(prefix="carryover-drain-") as tmp:
        workdir = Path(tmp)
        for kind, workers in configurations():
            name = f"{kind}_{workers}w"
            measured = []
            for run in range(runs):
                progress(f"drain: {size} deliveries, {kind}, {workers} worker(s), run {run + 1}")
                bare = bare_cpu_ms(workdir)
                with store(kind, workdir, run) as url:
                    figures = drain_once(url, workers, size, workdir)
                measured.append(figures | {"bare_cpu_ms": bare,
                                           "cpu_ratio": figures["cpu_ms"] / bare})  # fmt: skip
            results[name] = summarise(measured)
    return results


def summarise(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Return the medians of the runs and the runs themselves."""
    keys = ("per_s", "cpu_ms", "bare_cpu_ms", "cpu_ratio")
    return {f"median_{key}": round(median([r[key] for r in runs]), 3) for key in keys} | {
        "runs": [{key: round(value, 3) for key, value in r.items()} for r in runs]
    }
