"""Salesforce Outbound Messages: ack latency by message size, and message → CaseComment.

6. Ack latency: `POST /hooks/salesforce` with Outbound Messages of 1 and of 100 new cases,
   in an open loop, into a web-only `carryover serve` and into the bare Flask baseline (same
   waitress settings, same bodies), the servers taking turns.
7. Message → CaseComment: `carryover serve` with its embedded worker, against FakeSalesforce
   and FakeZendesk. The Salesforce contact's email is that of a Zendesk requester who already
   has a ticket, so each new case of the contact is due a summary comment; one message at a
   time is timed from the POST until the fake receives the CaseComment.

Every message has fresh notification ids and new cases (a repeated notification id would be
acknowledged as a duplicate without being stored), and is built before the timing starts.
"""

from __future__ import annotations

import http.client
import sqlite3
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import OpenLoopResult, Request, open_loop
from bench.note_latency import REQUESTER_EMAIL, NoteProbe, seed_requester
from bench.report import latency_figures, median, ms, progress
from bench.servers import HOST, ZENDESK_EMAIL, ZENDESK_TOKEN, Server, free_port, write_config
from devkit.simulators.salesforce import FakeSalesforce
from devkit.simulators.zendesk import FakeZendesk
from middleware.config import WORKER
from plugins.salesforce.outbound import ACK

HOOK_PATH = "/hooks/salesforce"
# As Salesforce sends them: SOAP 1.1 with an empty SOAPAction.
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
SIZES = (1, 100)  # notifications per message
RATES = {1: 50.0, 100: 10.0}  # messages per second in the open loop
ACK_WARMUP_S = 1.0
ACK_REPEATS = 3
ACK_RUN_S = 4.0
ACK_CONNECTIONS = 16
COMMENT_WARMUP = 3
COMMENT_REPEATS = 30
# Let the worker go idle, so each message has to wake it.
COMMENT_GAP_S = 0.2
COMMENT_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 10.0
COMMENT_MARKER = "[Carryover ref co-"  # the last line of every comment
CASE_DESCRIPTION = (
    "The replacement router from order {n} drops the connection every evening; "
    "I already restarted it twice and reset it to factory settings."
)


def settings() -> dict[str, Any]:
    """Return the Salesforce benchmark's parameters, for the report and the JSON."""
    return {
        "sizes": list(SIZES),
        "rates_per_s": {str(size): rate for size, rate in RATES.items()},
        "ack_warmup_s": ACK_WARMUP_S,
        "ack_repeats": ACK_REPEATS,
        "ack_run_s": ACK_RUN_S,
        "ack_connections": ACK_CONNECTIONS,
        "comment_warmup": COMMENT_WARMUP,
        "comment_repeats": COMMENT_REPEATS,
        "comment_gap_s": COMMENT_GAP_S,
    }


def integration(fake: FakeSalesforce) -> dict[str, Any]:
    """Return Carryover's integrations.salesforce settings for the fake org.

    The messages are proven by their source network (the bench sends from 127.0.0.1), as
    behind an allow-list of Salesforce's ranges: the path a proven message takes.
    """
    return {
        "organization_id": fake.org_id,
        "instance_url": fake.url,
        "session_id": fake.new_session(),
        "allowed_networks": ["127.0.0.1/32"],
    }


class Messages:
    """Build Outbound Messages announcing new cases of one contact, as the fake org sends them."""

    def __init__(self, fake: FakeSalesforce, contact_id: str) -> None:
        self.fake = fake
        self.contact_id = contact_id
        self.made = 0

    def build(self, notifications: int) -> tuple[bytes, list[str]]:
        """Create that many new cases; return the message announcing them, and their ids."""
        case_ids = []
        for _ in range(notifications):
            self.made += 1
            case_ids.append(
                self.fake.add_case(
                    f"Router keeps disconnecting ({self.made})",
                    self.contact_id,
                    origin="Web",
                    description=CASE_DESCRIPTION.format(n=self.made),
                )
            )
        records = [("Case", self.fake.case_fields(case_id)) for case_id in case_ids]
        return self.fake.outbound_message(records), case_ids

    def bodies(self, notifications: int, count: int) -> list[bytes]:
        """Build `count` messages of `notifications` new cases each."""
        return [self.build(notifications)[0] for _ in range(count)]


class Prepared:
    """Hand out prepared message bodies in order, to any sending thread, each once."""

    def __init__(self, bodies: Sequence[bytes]) -> None:
        self._bodies = iter(bodies)
        self._lock = threading.Lock()

    def __call__(self) -> Request:
        """Return the next prepared request: path, body and Salesforce's headers."""
        with self._lock:
            body = next(self._bodies)
        return HOOK_PATH, body, SOAP_HEADERS


def post_message(port: int, body: bytes) -> tuple[float, float]:
    """POST a message on a new connection; return when it was sent and answered, or raise."""
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        sent = time.monotonic()
        connection.request("POST", HOOK_PATH, body=body, headers=SOAP_HEADERS)
        response = connection.getresponse()
        answer = response.read()
        answered = time.monotonic()
    finally:
        connection.close()
    # An ignored notification gets the Ack too; only the header tells it was not stored.
    ignored = response.getheader("X-Carryover-Ignored")
    if response.status != 200 or answer != ACK or ignored:
        raise RuntimeError(
            f"port {port} answered {response.status} (ignored: {ignored}) {answer[:300]!r}, "
            "not the Salesforce Ack"
        )
    return sent, answered


def stored_counts(database: Path) -> tuple[int, int]:
    """Count the deliveries and their event keys (notifications) in a Carryover store."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        deliveries = connection.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        keys = connection.execute("SELECT count(*) FROM delivery_keys").fetchone()[0]
    return int(deliveries), int(keys)


def delivery_statuses(database: Path) -> dict[str, int]:
    """Count a store's deliveries by status."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        rows = connection.execute("SELECT status, count(*) FROM deliveries GROUP BY status")
        return {str(status): int(count) for status, count in rows}


def check_acks(servers: list[Server], messages: Messages, database: Path) -> None:
    """Send each server a new message; fail unless it is acked, and stored by Carryover."""
    for server in servers:
        before = stored_counts(database)
        post_message(server.port, messages.build(1)[0])
        if server.name != "bare" and stored_counts(database) != (before[0] + 1, before[1] + 1):
            raise RuntimeError(f"{server.name} acknowledged a new message without storing it")


# -- 6. ack latency ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AckRun:
    """One open-loop run of one server with messages of one size."""

    result: OpenLoopResult
    server_cpu_s: float


def plan_bodies(messages: Messages) -> dict[int, list[list[bytes]]]:
    """Build every timed message: per size, one list per repeat, sent to both servers."""
    plan = {}
    for size in SIZES:
        count = int(RATES[size] * ACK_RUN_S)
        plan[size] = [messages.bodies(size, count) for _ in range(ACK_REPEATS)]
    return plan


def run_open_loop(server: Server, size: int, seconds: float, bodies: list[bytes]) -> AckRun:
    """Send the bodies to one server at the size's rate; return the latencies and its CPU."""
    cpu_before = server.cpu_seconds()
    result = open_loop(HOST, server.port, RATES[size], seconds, ACK_CONNECTIONS, Prepared(bodies))
    return AckRun(result, server.cpu_seconds() - cpu_before)


def summarise_ack_runs(runs: list[AckRun]) -> dict[str, Any]:
    """Reduce one server's runs at one size to the medians of their percentiles."""
    per_run = []
    for run in runs:
        if not run.result.latencies:
            raise RuntimeError(f"no message of {run.result.sent} was acknowledged")
        per_run.append(latency_figures(run.result.latencies) | {
            "sent": run.result.sent,
            "acked": len(run.result.latencies),
            "errors": run.result.errors,
            "server_cpu_ms_per_message": ms(run.server_cpu_s / run.result.sent),
        })  # fmt: skip
    return {
        "p50_ms": median([r["p50_ms"] for r in per_run]),
        "p95_ms": median([r["p95_ms"] for r in per_run]),
        "p99_ms": median([r["p99_ms"] for r in per_run]),
        "max_ms": max(r["max_ms"] for r in per_run),
        "server_cpu_ms_per_message": median([r["server_cpu_ms_per_message"] for r in per_run]),
        "sent": sum(r["sent"] for r in per_run),
        "errors": sum(r["errors"] for r in per_run),
        "runs": per_run,
    }


def measure_ack_latency(
    servers: list[Server], plan: dict[int, list[list[bytes]]]
) -> dict[str, Any]:
    """Run the open loops, servers taking turns within each repeat; summarise per size."""
    runs: dict[int, dict[str, list[AckRun]]] = {
        size: {server.name: [] for server in servers} for size in SIZES
    }
    for repeat in range(ACK_REPEATS):
        for size in SIZES:
            for server in servers:
                bodies = plan[size][repeat]
                runs[size][server.name].append(run_open_loop(server, size, ACK_RUN_S, bodies))
    figures: dict[str, Any] = {}
    for size in SIZES:
        by_server = {name: summarise_ack_runs(r) for name, r in runs[size].items()}
        bare, carryover = by_server["bare"], by_server["carryover"]
        body_bytes = [len(body) for bodies in plan[size] for body in bodies]
        figures[str(size)] = by_server | {
            "rate_per_s": RATES[size],
            "body_bytes": round(sum(body_bytes) / len(body_bytes)),
            "ratio_p50": round(carryover["p50_ms"] / bare["p50_ms"], 1),
            "ratio_p99": round(carryover["p99_ms"] / bare["p99_ms"], 1),
        }
    return figures


def ack_benchmark(
    workdir: Path, zendesk: FakeZendesk, salesforce: FakeSalesforce, bare: Server
) -> dict[str, Any]:
    """Benchmark 6: a web-only `carryover serve` against the bare baseline, by message size."""
    messages = Messages(salesforce, salesforce.add_contact("Bo", "Ingest", email="bo@example.com"))
    progress("salesforce ack latency: building the messages")
    warm = {size: messages.bodies(size, int(RATES[size] * ACK_WARMUP_S)) for size in SIZES}
    plan = plan_bodies(messages)
    port = free_port()
    # worker.enabled false: the figures are the web path alone, as in benchmark 2.
    config = write_config(workdir, "ingest", port, zendesk.url, worker=False,
                          salesforce=integration(salesforce))  # fmt: skip
    database = workdir / "ingest.db"
    carryover = Server.carryover(config, port, workdir, "carryover")
    servers = [bare, carryover]
    try:
        carryover.wait_ready()
        check_acks(servers, messages, database)
        for server in servers:
            for size in SIZES:
                run_open_loop(server, size, ACK_WARMUP_S, warm[size])
        runs = ACK_REPEATS * len(SIZES) * len(servers)
        progress(f"salesforce ack latency: {runs} open loops of {ACK_RUN_S:g} s, "
                 f"{'/s and '.join(f'{RATES[s]:g}' for s in SIZES)}/s")  # fmt: skip
        before = stored_counts(database)
        latency = measure_ack_latency(servers, plan)
        after = stored_counts(database)
    finally:
        carryover.stop()
    acked = {
        size: sum(r["acked"] for r in latency[str(size)]["carryover"]["runs"]) for size in SIZES
    }
    latency["stored"] = {
        "messages": after[0] - before[0],
        "notifications": after[1] - before[1],
        "acknowledged_messages": sum(acked.values()),
        "acknowledged_notifications": sum(size * count for size, count in acked.items()),
    }
    return latency


# -- 7. message → CaseComment -----------------------------------------------------------------
@dataclass(frozen=True)
class CommentTiming:
    """One new case, in seconds from sending its message: to the Ack, to the CaseComment."""

    case_id: str
    ack_s: float
    comment_s: float
    bare_ack_s: float  # the same body's round trip to the bare baseline


class CommentProbe:
    """Send one new case of the known contact at a time; time the comment Carryover adds."""

    def __init__(self, fake: FakeSalesforce, port: int, bare_port: int) -> None:
        self.fake = fake
        self.port = port
        self.bare_port = bare_port

    def one(self, body: bytes, case_id: str) -> CommentTiming:
        """Post a prepared message of one new case, wait for its comment, then post it to bare."""
        seen = len(self.fake.requests_log)
        sent, acked = post_message(self.port, body)
        written = self._wait_for_comment(case_id, seen)
        bare_sent, bare_acked = post_message(self.bare_port, body)
        return CommentTiming(case_id, acked - sent, written - sent, bare_acked - bare_sent)

    def _wait_for_comment(self, case_id: str, seen: int) -> float:
        """Return when the fake received the CaseComment's POST (its own monotonic stamp)."""
        wanted = case_id.encode()
        deadline = time.monotonic() + COMMENT_TIMEOUT_S
        while time.monotonic() < deadline:
            # The fake appends (method, path, body, monotonic time) for every request.
            for method, path, body, received in self.fake.requests_log[seen:]:
                if method == "POST" and "/sobjects/CaseComment" in path and wanted in body:
                    self._check_stored(case_id)
                    return received
            time.sleep(0.002)
        raise RuntimeError(f"no CaseComment on case {case_id} within {COMMENT_TIMEOUT_S:g} s")

    def _check_stored(self, case_id: str) -> None:
        """Fail unless the fake stored exactly one comment of Carryover's on the case."""
        deadline = time.monotonic() + COMMENT_TIMEOUT_S
        while not (comments := self.fake.comments(case_id)) and time.monotonic() < deadline:
            time.sleep(0.002)
        ours = [c for c in comments if COMMENT_MARKER in c["CommentBody"]]
        if len(ours) != 1 or ours[0]["IsPublished"]:
            raise RuntimeError(f"case {case_id}: expected one private comment, got {comments}")


def wait_until_settled(database: Path, server: Server) -> None:
    """Wait until every stored delivery is done; fail if one is not done in time."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    statuses: dict[str, int] = {}
    while time.monotonic() < deadline:
        statuses = delivery_statuses(database)
        if statuses and set(statuses) == {"done"}:
            return
        time.sleep(0.02)
    raise RuntimeError(f"deliveries not done: {statuses}\n{server.log_tail()}")


def comment_benchmark(
    workdir: Path, zendesk: FakeZendesk, salesforce: FakeSalesforce, bare: Server
) -> dict[str, Any]:
    """Benchmark 7: `carryover serve` with its worker, from the message to the CaseComment."""
    seed_requester(zendesk)
    contact_id = salesforce.add_contact("Ann", "Example", email=REQUESTER_EMAIL)
    messages = Messages(salesforce, contact_id)
    planned = [messages.build(1) for _ in range(COMMENT_WARMUP + COMMENT_REPEATS)]
    port = free_port()
    config = write_config(workdir, "comments", port, zendesk.url, worker=True,
                          salesforce=integration(salesforce))  # fmt: skip
    database = workdir / "comments.db"
    server = Server.carryover(config, port, workdir, "carryover-comments")
    try:
        server.wait_ready()
        # The requester's Zendesk ticket gives the customer history: a comment is due.
        NoteProbe(zendesk, HOST, port).introduce()
        wait_until_settled(database, server)
        progress(f"salesforce message → CaseComment: {COMMENT_REPEATS} new cases, one at a time")
        probe = CommentProbe(salesforce, port, bare.port)
        timings = []
        for index, (body, (case_id,)) in enumerate(planned):
            time.sleep(COMMENT_GAP_S)
            timing = probe.one(body, case_id)
            if index >= COMMENT_WARMUP:
                timings.append(timing)
        wait_until_settled(database, server)
        statuses = delivery_statuses(database)
    finally:
        server.stop()
    comment = latency_figures([t.comment_s for t in timings])
    bare_ack = latency_figures([t.bare_ack_s for t in timings])
    return comment | {
        "count": len(timings),
        "ack": latency_figures([t.ack_s for t in timings]),
        "bare_ack": bare_ack,
        "ratio_p50": round(comment["p50_ms"] / bare_ack["p50_ms"], 1),
        "ratio_p95": round(comment["p95_ms"] / bare_ack["p95_ms"], 1),
        "deliveries": statuses,
        "comments_written": sum(len(salesforce.comments(case)) for _, (case,) in planned),
        "poll_interval_s": WORKER["poll_interval_s"].default,
    }


def salesforce_benchmark() -> dict[str, Any]:
    """Benchmarks 6 and 7, against one fake Salesforce org and one fake Zendesk."""
    with (
        tempfile.TemporaryDirectory(prefix="carryover-bench-sf-") as tmp,
        FakeZendesk(ZENDESK_EMAIL, ZENDESK_TOKEN) as zendesk,
        FakeSalesforce() as salesforce,
    ):
        workdir = Path(tmp)
        bare = Server.bare(free_port(), workdir)
        try:
            bare.wait_ready()
            ack = ack_benchmark(workdir, zendesk, salesforce, bare)
            comment = comment_benchmark(workdir, zendesk, salesforce, bare)
        finally:
            bare.stop()
    return {"settings": settings(), "ack_latency": ack, "message_to_comment": comment}
