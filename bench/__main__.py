"""Run the benchmarks once, print the report and write var/bench.json (`make bench`).

python -m bench             # all: the Zendesk ingest benchmarks, the phone ones, Salesforce, mood
python -m bench zendesk     # 1 to 3 only
python -m bench phone       # 4 and 5 only (bench/phone.py)
python -m bench salesforce  # 6 and 7 only (bench/salesforce.py)
python -m bench mood        # 9 only: the mood on labelled messages (bench/mood.py), about 2 s
python -m bench history     # 10 only: importing history against the fakes (bench/history.py);
                            # on PostgreSQL too when CARRYOVER_TEST_DATABASE_URL is set
python -m bench across      # ring → pop with the worker in another process, on PostgreSQL
                            # (bench/across.py; needs CARRYOVER_TEST_DATABASE_URL)
python -m bench pops        # 11 only: ack latency with 2,000 open pops on one web process
                            # (bench/pops.py); on PostgreSQL when CARRYOVER_TEST_DATABASE_URL
                            # is set
python -m bench fanout      # 12 only: one `carryover worker` against a fake Zendesk answering
                            # 300 ms late (bench/fanout.py); on PostgreSQL when
                            # CARRYOVER_TEST_DATABASE_URL is set
python -m bench drain       # 13 only: a 10,000-delivery burst drained by `carryover worker`
                            # (bench/drain.py); on PostgreSQL too when the URL is set
python -m bench faults      # 8 only, not part of `all`: faults across web + 2 workers on
                            # PostgreSQL (bench/faults.py; needs CARRYOVER_TEST_DATABASE_URL)
"""

from __future__ import annotations

import argparse
import http.client
import os
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.across import across_benchmark
from bench.deliveries import HOOK_PATH, TicketCreated
from bench.drain import BURST, RUNS, drain_benchmark
from bench.environment import OtherLoad, describe_environment
from bench.fanout import fanout_benchmark
from bench.faults import faults_benchmark
from bench.history import history_benchmark
from bench.load import closed_loop, open_loop
from bench.mood import mood_benchmark
from bench.note_latency import NoteProbe, seed_requester
from bench.phone import phone_benchmark
from bench.pops import pops_benchmark
from bench.report import latency_figures, median, progress, render_report, write_json
from bench.salesforce import salesforce_benchmark
from bench.serve_bare import SERVER_DEFAULTS
from bench.servers import HOST, ZENDESK_EMAIL, ZENDESK_TOKEN, Server, free_port, write_config
from devkit.simulators.zendesk import FakeZendesk
from middleware.config import WORKER

PG_ENV = "CARRYOVER_TEST_DATABASE_URL"  # the scale-out rows need PostgreSQL
CONNECTIONS = 16
WARMUP_S = 2.0
REPEATS = 5
REPEAT_S = 3.0
OPEN_LOOP_RATE = 200
OPEN_LOOP_S = 10.0
OPEN_LOOP_CONNECTIONS = 16
NOTE_WARMUP = 3
NOTE_REPEATS = 50
NOTE_GAP_S = 0.1  # let the worker go idle, so each webhook has to wake it
GOAL_RATIO = 0.5
GOAL_ACK_P99_MS = 50.0
GOAL_NOTE_P95_MS = 500.0

# Notes count against ticket_updates_per_minute (default 100); stay under it, or the
# benchmark would time the budget's wait instead of the pipeline.
assert NOTE_WARMUP + NOTE_REPEATS < 100


def settings() -> dict[str, Any]:
    """Return the benchmark's parameters, for the report and the JSON."""
    return {
        "waitress_threads": SERVER_DEFAULTS["threads"],
        "connections": CONNECTIONS,
        "warmup_s": WARMUP_S,
        "repeats": REPEATS,
        "repeat_s": REPEAT_S,
        "open_loop_rate": OPEN_LOOP_RATE,
        "open_loop_s": OPEN_LOOP_S,
        "open_loop_connections": OPEN_LOOP_CONNECTIONS,
        "note_repeats": NOTE_REPEATS,
    }


def check_stores(server: Server) -> None:
    """Send one delivery and fail unless it is acknowledged as stored (not refused, ignored)."""
    body, headers = TicketCreated().delivery()
    connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
    connection.request("POST", HOOK_PATH, body=body, headers=headers)
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    if response.status != 200 or answer != b"{}":
        raise RuntimeError(f"{server.name} answered {response.status} {answer!r}, not a stored ack")


def stored_deliveries(database: Path) -> int:
    """Count the deliveries in a Carryover SQLite store."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        return int(connection.execute("SELECT count(*) FROM deliveries").fetchone()[0])


def warm_up(servers: list[Server]) -> None:
    """Run the closed loop briefly on every server (imports, caches, pools, SQLite pages)."""
    for server in servers:
        closed_loop(HOST, server.port, CONNECTIONS, WARMUP_S)


def measure_throughput(servers: list[Server]) -> dict[str, Any]:
    """Run the closed loop on each server in turn, REPEATS times; summarise per server."""
    runs: dict[str, list[dict[str, float]]] = {server.name: [] for server in servers}
    for _ in range(REPEATS):
        for server in servers:
            cpu_before = server.cpu_seconds()
            result = closed_loop(HOST, server.port, CONNECTIONS, REPEAT_S)
            runs[server.name].append({
                "per_s": result.per_second,
                "requests": result.requests,
                "errors": result.errors,
                "server_cpu_cores": (server.cpu_seconds() - cpu_before) / result.seconds,
                "client_cpu_cores": result.client_cpu_s / result.seconds,
            })  # fmt: skip
    return {name: summarise_runs(server_runs) for name, server_runs in runs.items()}


def summarise_runs(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Reduce the closed-loop runs of one server to medians and totals."""
    return {
        "runs_per_s": [round(r["per_s"], 1) for r in runs],
        "median_per_s": median([r["per_s"] for r in runs]),
        "acknowledged": int(sum(r["requests"] for r in runs)),
        "errors": int(sum(r["errors"] for r in runs)),
        "server_cpu_cores": median([r["server_cpu_cores"] for r in runs]),
        "client_cpu_cores": median([r["client_cpu_cores"] for r in runs]),
    }


def measure_ack_latency(server: Server) -> dict[str, Any]:
    """Run the open loop against one server and return its latency figures."""
    result = open_loop(HOST, server.port, OPEN_LOOP_RATE, OPEN_LOOP_S, OPEN_LOOP_CONNECTIONS)
    return latency_figures(result.latencies) | {"sent": result.sent, "errors": result.errors}


def ingest_benchmarks(workdir: Path, fake: FakeZendesk) -> dict[str, Any]:
    """Benchmarks 1 and 2: a web-only `carryover serve` against the bare baseline.

    The goals are measured on the web path alone (worker.enabled false, as in a web-only
    process). Then the same load is measured on `carryover serve` with its embedded worker,
    as `make run` serves, for information: its worker processes the deliveries as they come
    and shares the process with the web threads. It runs on its own afterwards, so that its
    worker's backlog takes no CPU from the other servers' turns.
    """
    port = free_port()
    config = write_config(workdir, "ingest", port, fake.url, worker=False)
    bare = Server.bare(free_port(), workdir)
    carryover = Server.carryover(config, port, workdir, "carryover")
    throughput, latency = measure_ingest([bare, carryover], workdir / "ingest.db")
    embedded_port = free_port()
    embedded_config = write_config(workdir, "embedded", embedded_port, fake.url, worker=True)
    embedded = Server.carryover(embedded_config, embedded_port, workdir, "embedded")
    alone, alone_latency = measure_ingest([embedded])
    throughput |= alone
    latency |= alone_latency
    bare_per_s = throughput["bare"]["median_per_s"]
    ratio = round(throughput["carryover"]["median_per_s"] / bare_per_s, 2)
    embedded_ratio = round(throughput["embedded"]["median_per_s"] / bare_per_s, 2)
    throughput |= {"ratio": ratio, "goal_ratio": GOAL_RATIO, "met": ratio >= GOAL_RATIO,
                   "embedded_ratio": embedded_ratio}  # fmt: skip
    p99 = latency["carryover"]["p99_ms"]
    latency |= {"goal_p99_ms": GOAL_ACK_P99_MS, "met": p99 <= GOAL_ACK_P99_MS}
    return {"throughput": throughput, "ack_latency": latency}


def measure_ingest(
    servers: list[Server], database: Path | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start the servers, run the closed loop and then the open loop on them, stop them.

    With a database, the last server's figures say how many deliveries it stored.
    """
    try:
        for server in servers:
            server.wait_ready()
            check_stores(server)
        names = " and ".join(server.name for server in servers)
        progress(f"ingest throughput of {names}: warm-up, then the closed loop")
        warm_up(servers)
        stored_before = stored_deliveries(database) if database else 0
        throughput = measure_throughput(servers)
        if database:
            throughput[servers[-1].name]["stored"] = stored_deliveries(database) - stored_before
        progress(f"ack latency: open loop at {OPEN_LOOP_RATE}/s, {OPEN_LOOP_S:g} s per server")
        latency: dict[str, Any] = {server.name: measure_ack_latency(server) for server in servers}
    finally:
        for server in servers:
            server.stop()
    return throughput, latency


def note_benchmark(workdir: Path, fake: FakeZendesk) -> dict[str, Any]:
    """Benchmark 3: `carryover serve` with its worker, from webhook to the note's PUT."""
    seed_requester(fake)
    port = free_port()
    config = write_config(workdir, "notes", port, fake.url, worker=True)
    server = Server.carryover(config, port, workdir, "carryover-notes")
    try:
        server.wait_ready()
        progress(f"webhook → note: {NOTE_REPEATS} new tickets, one at a time")
        probe = NoteProbe(fake, HOST, port)
        probe.introduce()
        timings = []
        for index in range(NOTE_WARMUP + NOTE_REPEATS):
            time.sleep(NOTE_GAP_S)
            timing = probe.one()
            if index >= NOTE_WARMUP:
                timings.append(timing)
    finally:
        server.stop()
    figures = latency_figures([t.note_s for t in timings])
    return figures | {
        "count": len(timings),
        "ack": latency_figures([t.ack_s for t in timings]),
        "poll_interval_s": WORKER["poll_interval_s"].default,
        "goal_p95_ms": GOAL_NOTE_P95_MS,
        "met": figures["p95_ms"] <= GOAL_NOTE_P95_MS,
    }


# How long each part takes; the phone part generates its store on the first run (30 s more).
PARTS = {
    "all": "about 7 min",
    "zendesk": "about 100 s",
    "phone": "about 40 s",
    "salesforce": "about 70 s",
    "faults": "about 90 s on PostgreSQL",
    "across": "about 90 s on PostgreSQL",
    "mood": "about 2 s",
    "history": "about 40 s (twice that with PostgreSQL)",
    "pops": "about 2 min",
    "fanout": "about 3 min",
    "drain": "minutes: a 10,000-delivery burst, 3 runs per store and worker count",
}


def zendesk_benchmarks() -> dict[str, Any]:
    """Benchmarks 1 to 3, against one fake Zendesk."""
    with (
        tempfile.TemporaryDirectory(prefix="carryover-bench-") as tmp,
        FakeZendesk(ZENDESK_EMAIL, ZENDESK_TOKEN) as fake,
    ):
        workdir = Path(tmp)
        results = ingest_benchmarks(workdir, fake)
        results["webhook_to_note"] = note_benchmark(workdir, fake)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks asked for, print the report, write var/bench.json."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("part", nargs="?", choices=sorted(PARTS), default="all")
    parser.add_argument("--burst", type=int, default=BURST, help="deliveries in the drain's burst")
    parser.add_argument("--runs", type=int, default=RUNS, help="runs of the drain per store")
    args = parser.parse_args(argv)
    part = args.part
    results: dict[str, Any] = {"environment": describe_environment(), "settings": settings()}
    other_load = OtherLoad()
    progress(f"{PARTS[part]}; keep the machine otherwise idle ({os.cpu_count()} CPUs)")
    if part in ("all", "zendesk"):
        results |= zendesk_benchmarks()
    if part in ("all", "phone"):
        results["phone"] = phone_benchmark()
    if part in ("all", "salesforce"):
        results["salesforce"] = salesforce_benchmark()
    if part in ("all", "mood"):
        results["mood"] = mood_benchmark()
    if part in ("all", "history"):
        results["history"] = history_benchmark()
    if part in ("all", "across") and (part == "across" or os.environ.get(PG_ENV)):
        results["across"] = across_benchmark()
    if part in ("all", "pops"):
        results["pops"] = pops_benchmark()
    if part in ("all", "fanout"):
        results["fanout"] = fanout_benchmark()
    if part in ("all", "drain"):
        results["drain"] = drain_benchmark(args.burst, args.runs)
    if part == "faults":
        results["faults"] = faults_benchmark()
    results["environment"]["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    results["environment"]["other_processes_cpus"] = other_load.cores()
    write_json(results)
    print(render_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
