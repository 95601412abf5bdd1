"""The phone features on a large store: context and pop latency, and ring → pop.

`carryover serve` (with its embedded worker) runs on a copy of the generated store
(bench/generate.py: 1,000,000 interactions of 100,000 customers). One agent client, on one
keep-alive connection, reads /api/v1/context and /pop for random customers and for the
heavy customer, and /healthz as the baseline, all in one shuffled sequence. Then, one caller
at a time, an open pop's event stream is timed from the CTI `newCall` webhook to the pop
event that shows the call ringing.
"""

from __future__ import annotations

import html
import http.client
import json
import random
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.generate import (
    CUSTOMERS,
    HEAVY_CUSTOMER,
    HEAVY_INTERACTIONS,
    INTERACTIONS,
    ZENDESK_USER_BASE,
    Generated,
    cached_store,
    copy_store,
    phone_of,
)
from bench.report import latency_figures, progress
from bench.servers import AGENT_KEY, CTI_SECRET, HOST, Server, free_port, write_phone_config
from middleware.config import POP, WORKER
from middleware.ingest.standard_webhooks import sign

READ_CUSTOMERS = 1_000  # random customers per endpoint, each read once
HEAVY_READS = 200  # reads of the heavy customer per endpoint
HEALTHZ_READS = READ_CUSTOMERS + HEAVY_READS
WARMUP_READS = 50  # per endpoint, of other customers, before measuring
RING_WARMUP = 3
RING_REPEATS = 50
# Let the worker go idle, so each webhook has to wake it. Also, a closed stream keeps its
# slot (32 with the default 40 threads) until the server's second write after the close,
# up to 2 × pop.poll_s = 4 s: calls 0.1 s apart would run out of slots (429) at the 33rd.
RING_GAP_S = 0.25
RING_TIMEOUT_S = 10.0
COMPANY_NUMBER = "14155550100"  # the number the customers call
GOAL_CONTEXT_P99_MS = 50.0
GOAL_RING_P95_MS = 300.0
SEED = 7
EVENTS_URL = re.compile(r'data-events="([^"]*)"')  # the pop's stream URL, HTML-escaped
MAX_ERRORS_KEPT = 5


def settings() -> dict[str, Any]:
    """Return the phone benchmark's parameters, for the report and the JSON."""
    return {
        "read_customers": READ_CUSTOMERS,
        "heavy_reads": HEAVY_READS,
        "healthz_reads": HEALTHZ_READS,
        "warmup_reads": WARMUP_READS,
        "ring_repeats": RING_REPEATS,
        "ring_gap_s": RING_GAP_S,
    }


class Agent:
    """An agent's client: one keep-alive connection, sending the Bearer agent key."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection(HOST, port, timeout=30)

    def get(self, path: str) -> tuple[int, bytes, float]:
        """GET a path; return the status (0 if the connection broke), the body, the seconds."""
        headers = {"Authorization": f"Bearer {AGENT_KEY}"}
        began = time.perf_counter()
        try:
            self.connection.request("GET", path, headers=headers)
            response = self.connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.connection.close()
            self.connection = http.client.HTTPConnection(HOST, self.port, timeout=30)
            return 0, repr(exc).encode(), time.perf_counter() - began
        return response.status, body, time.perf_counter() - began

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


@dataclass(frozen=True)
class Read:
    """One planned GET: which endpoint, which group of customers, whose data it must show."""

    endpoint: str  # context, pop or healthz
    group: str  # random, heavy or baseline
    customer_id: int | None

    @property
    def path(self) -> str:
        """Return the path and query to GET."""
        if self.customer_id is None:
            return "/healthz"
        endpoint = "/api/v1/context" if self.endpoint == "context" else "/pop"
        return f"{endpoint}?phone={quote(phone_of(self.customer_id), safe='')}"

    def shows_customer(self, body: bytes) -> bool:
        """Tell whether an answer is about the right customer (not only a 200)."""
        if self.customer_id is None:
            return body.startswith(b"{")
        if self.endpoint == "context":
            try:
                return bool(json.loads(body)["customer"]["id"] == self.customer_id)
            except (ValueError, KeyError, TypeError):
                return False
        return f"zendesk_user {ZENDESK_USER_BASE + self.customer_id}".encode() in body


def plan_reads(rng: random.Random, customers: list[int]) -> list[Read]:
    """Return every measured read, shuffled so that drift affects each group alike."""
    context, pop = customers[:READ_CUSTOMERS], customers[READ_CUSTOMERS : 2 * READ_CUSTOMERS]
    reads = [Read("context", "random", c) for c in context]
    reads += [Read("pop", "random", c) for c in pop]
    reads += [
        Read(e, "heavy", HEAVY_CUSTOMER) for e in ("context", "pop") for _ in range(HEAVY_READS)
    ]
    reads += [Read("healthz", "baseline", None) for _ in range(HEALTHZ_READS)]
    rng.shuffle(reads)
    return reads


def run_reads(agent: Agent, reads: Sequence[Read]) -> tuple[list[tuple[Read, float]], list[str]]:
    """Send the reads one after another; return the timings of good answers, and the errors."""
    timings, errors = [], []
    for read in reads:
        status, body, seconds = agent.get(read.path)
        if status == 200 and read.shows_customer(body):
            timings.append((read, seconds))
        else:
            errors.append(f"GET {read.path} → {status} in {seconds * 1000:.0f} ms: {body[:200]!r}")
    return timings, errors


def read_figures(timings: list[tuple[Read, float]], errors: list[str]) -> dict[str, Any]:
    """Summarise the reads per endpoint and group, with ratios to /healthz."""

    def of(endpoint: str, group: str | None = None) -> list[float]:
        seconds = [s for r, s in timings if r.endpoint == endpoint and group in (None, r.group)]
        if not seconds:
            raise RuntimeError(f"no good answer from {endpoint} ({group}): {errors[:3]}")
        return seconds

    baseline = latency_figures(of("healthz")) | {"count": len(of("healthz"))}
    figures: dict[str, Any] = {"healthz": baseline}
    for endpoint in ("context", "pop"):
        groups: dict[str, Any] = {}
        for group in ("random", "heavy", None):
            seconds = of(endpoint, group)
            groups[group or "all"] = latency_figures(seconds) | {"count": len(seconds)}
        both = groups["all"]
        groups["ratio_p50"] = round(both["p50_ms"] / baseline["p50_ms"], 1)
        groups["ratio_p99"] = round(both["p99_ms"] / baseline["p99_ms"], 1)
        figures[endpoint] = groups
    # The goal holds for the random customers, the heavy one and both together.
    worst = max(figures["context"][group]["p99_ms"] for group in ("random", "heavy", "all"))
    met = not errors and worst <= GOAL_CONTEXT_P99_MS
    figures["context"] |= {"goal_p99_ms": GOAL_CONTEXT_P99_MS, "met": met}
    figures["errors"] = len(errors)
    figures["error_samples"] = errors[:MAX_ERRORS_KEPT]
    return figures


def measure_reads(
    port: int, rng: random.Random, customers: list[int], warm: list[int]
) -> dict[str, Any]:
    """Warm up on the `warm` customers, then time the shuffled reads of context, pop, /healthz."""
    agent = Agent(port)
    try:
        run_reads(agent, [Read(e, "random", c) for c in warm for e in ("context", "pop")])
        timings, errors = run_reads(agent, plan_reads(rng, customers))
    finally:
        agent.close()
    return read_figures(timings, errors)


class EventStream:
    """A pop's server-sent event stream, read line by line from a raw connection."""

    def __init__(self, port: int, path: str) -> None:
        self.connection = http.client.HTTPConnection(HOST, port, timeout=RING_TIMEOUT_S)
        self.connection.request("GET", path, headers={"Accept": "text/event-stream"})
        self.response = self.connection.getresponse()
        if self.response.status != 200:
            body = self.response.read()[:200]
            self.close()
            raise RuntimeError(f"GET {path} → {self.response.status}: {body!r}")

    def next_event(self) -> tuple[str, str]:
        """Return the next event's name and data; comments and retry fields are skipped."""
        name, data = "message", list[str]()
        while True:
            line = self.response.readline()
            if not line:
                raise ConnectionError("the event stream ended")
            text = line.decode("utf-8").rstrip("\r\n")
            if not text:
                if data:
                    return name, "\n".join(data)
                name = "message"
                continue
            field, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)

    def close(self) -> None:
        """Close the connection; the server notices at its next write and frees the slot."""
        # Without a Content-Length the response owns the socket (http.client hands it over
        # when the answer ends with the connection): closing the connection alone leaves it
        # open, and the server keeps the stream's slot.
        self.response.close()
        self.connection.close()


@dataclass(frozen=True)
class RingTiming:
    """One call: seconds from sending newCall to its 200, and to the ringing pop event."""

    ack_s: float
    pop_s: float | None  # None: no ringing event within RING_TIMEOUT_S


class RingProbe:
    """Open a known caller's pop, ring their number through CTI, time the live update."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.agent = Agent(port)
        self.hooks = http.client.HTTPConnection(HOST, port, timeout=30)

    def events_path(self, customer_id: int) -> str:
        """Load the pop page and return the signed events URL its script opens."""
        read = Read("pop", "ring", customer_id)
        status, body, _ = self.agent.get(read.path)
        found = EVENTS_URL.search(body.decode("utf-8"))
        if status != 200 or found is None:
            raise RuntimeError(f"GET {read.path} → {status}, no events URL: {body[:200]!r}")
        return html.unescape(found.group(1))

    def ring(self, customer_id: int) -> float:
        """Send a signed newCall from the customer's number (no plus); return the seconds."""
        body = json.dumps({
            "event": "newCall", "from": phone_of(customer_id).lstrip("+"),
            "to": COMPANY_NUMBER, "direction": "in", "callId": str(uuid.uuid4()), "user": "",
        }).encode()  # fmt: skip
        webhook_id, timestamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": f"v1,{sign(CTI_SECRET, webhook_id, timestamp, body)}",
        }
        began = time.perf_counter()
        self.hooks.request("POST", "/hooks/cti", body=body, headers=headers)
        response = self.hooks.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST /hooks/cti → {response.status}: {answer[:200]!r}")
        return began

    def one(self, customer_id: int) -> RingTiming:
        """Time one call, from the webhook to the pop event that shows it ringing."""
        stream = EventStream(self.port, self.events_path(customer_id))
        try:
            name, data = stream.next_event()  # the current state, sent at once
            if name != "pop" or "ringing" in data:
                raise RuntimeError(f"first event of the pop: {name} {data[:200]!r}")
            began = self.ring(customer_id)
            acked = time.perf_counter()
            deadline = began + RING_TIMEOUT_S
            while time.perf_counter() < deadline:
                try:
                    name, data = stream.next_event()
                except TimeoutError:
                    break
                if name == "pop" and "ringing" in data:
                    return RingTiming(acked - began, time.perf_counter() - began)
            return RingTiming(acked - began, None)
        finally:
            stream.close()

    def close(self) -> None:
        """Close the connections."""
        self.agent.close()
        self.hooks.close()


def ring_each(port: int, callers: list[int]) -> list[RingTiming]:
    """Ring each caller in turn; return the timings after the first RING_WARMUP."""
    probe = RingProbe(port)
    timings = []
    try:
        for index, customer_id in enumerate(callers):
            time.sleep(RING_GAP_S)
            timing = probe.one(customer_id)
            if index >= RING_WARMUP:
                timings.append(timing)
    finally:
        probe.close()
    return timings


def measure_ring_to_pop(port: int, callers: list[int]) -> dict[str, Any]:
    """Ring each caller in turn (the first RING_WARMUP are not counted); summarise."""
    timings = ring_each(port, callers)
    arrived = [t.pop_s for t in timings if t.pop_s is not None]
    missed = len(timings) - len(arrived)
    figures: dict[str, Any] = latency_figures(arrived) if arrived else {}
    p95 = figures.get("p95_ms", float("inf"))
    return figures | {
        "count": len(timings),
        "missed": missed,
        "timeout_s": RING_TIMEOUT_S,
        "ack": latency_figures([t.ack_s for t in timings]),
        "pop_poll_s": POP["poll_s"].default,
        "worker_poll_interval_s": WORKER["poll_interval_s"].default,
        "goal_p95_ms": GOAL_RING_P95_MS,
        "met": not missed and p95 <= GOAL_RING_P95_MS,
    }


def describe_store(store: Path, generated: Generated | None) -> dict[str, Any]:
    """Say which store was measured and whether this run generated it."""
    return {
        "file": store.name,
        "size_mb": round(store.stat().st_size / 1e6),
        "customers": CUSTOMERS,
        "interactions": INTERACTIONS,
        "heavy_customer": HEAVY_CUSTOMER,
        "heavy_interactions": HEAVY_INTERACTIONS,
        "generated_now": generated is not None,
        "generation_s": round(generated.seconds, 1) if generated else None,
    }


def phone_benchmark() -> dict[str, Any]:
    """Benchmarks 4 and 5: context and pop latency, and ring → pop, on the 1M store."""
    store, generated = cached_store()
    rng = random.Random(SEED)
    # Distinct customers for context, pop, warm-up and calls: none is read twice.
    calls = RING_WARMUP + RING_REPEATS
    others = rng.sample(range(HEAVY_CUSTOMER + 1, CUSTOMERS + 1), WARMUP_READS + calls)
    readers = rng.sample(sorted(set(range(HEAVY_CUSTOMER + 1, CUSTOMERS + 1)) - set(others)),
                         2 * READ_CUSTOMERS)  # fmt: skip
    warm, callers = others[:WARMUP_READS], others[WARMUP_READS:]
    with tempfile.TemporaryDirectory(prefix="carryover-bench-phone-") as tmp:
        workdir = Path(tmp)
        progress(f"phone: copying the store ({store.stat().st_size / 1e6:.0f} MB) to {tmp}")
        database = copy_store(store, workdir)
        port = free_port()
        config = write_phone_config(workdir, "phone", port, f"sqlite:///{database}")
        server = Server.carryover(config, port, workdir, "carryover-phone")
        try:
            server.wait_ready()
            reads = 2 * (READ_CUSTOMERS + HEAVY_READS) + HEALTHZ_READS
            progress(f"context and pop latency: {reads} reads, one at a time")
            latency = measure_reads(port, rng, readers, warm)
            progress(f"ring → pop: {RING_REPEATS} calls, one at a time")
            ring = measure_ring_to_pop(port, callers)
        finally:
            server.stop()
    return {
        "store": describe_store(store, generated),
        "settings": settings(),
        "reads": latency,
        "ring_to_pop": ring,
    }
