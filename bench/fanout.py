"""Benchmark 12: a burst processed by one `carryover worker` while every API answer is late.

BURST signed `ticket.created` deliveries of as many requesters wait in the store
(PostgreSQL, where `carryover worker` processes run beside web processes, when
CARRYOVER_TEST_DATABASE_URL names one; else SQLite); each needs a Zendesk lookup (the
requester with their identities side-loaded: one API call) and gets a private note
(`summary.note_on_first_contact`, one more call). One `carryover worker` process then
works through them against the fake Zendesk, which answers every API request
LATE_S late; the baseline of the same run is the same burst with answers at once. Latencies
take turns, REPEATS times, each run on a fresh store and a fresh fake.

Figures, medians of the runs: deliveries processed per second (from the first delivery
done to the last, in the store's finished_at) and notes written per second (from the
first note's PUT to the last, as the fake received them). A run stops after RUN_LIMIT_S:
its rates are then those of what was done by then.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, func, select

from bench.deliveries import HOOK_PATH, WEBHOOK_SECRET, load_fixture, signed_headers
from bench.faults import fresh_schema
from bench.note_latency import NOTE_MARKER
from bench.report import median, progress
from bench.servers import CARRYOVER, ZENDESK_EMAIL, ZENDESK_TOKEN, Server
from devkit.simulators.zendesk import FakeZendesk
from middleware.config import WORKER, parse_config
from middleware.installation import build_installation
from middleware.integrations.registry import PluginRegistry
from middleware.store.queue import DONE
from middleware.store.tables import deliveries, make_engine, upgrade
from middleware.web.app import create_app

BURST = 1000
LATE_S = 0.3
REPEATS = 3
RUN_LIMIT_S = 60.0
UPSTREAM_CONCURRENCY = 128  # calls in flight to Zendesk at most (worker.upstream_concurrency)
FIRST_USER = 9_100_000_001
FIRST_TICKET = 900_001
GOAL_PER_S = 100.0  # deliveries per second at LATE_S


def fanout_benchmark() -> dict[str, Any]:
    """Benchmark 12: the burst at each latency, REPEATS times taking turns; the medians."""
    runs: dict[float, list[dict[str, float]]] = {0.0: [], LATE_S: []}
    with tempfile.TemporaryDirectory(prefix="carryover-bench-fanout-") as tmp:
        for repeat in range(REPEATS):
            for late_s in runs:
                progress(f"fan-out on {_store()}: {BURST} deliveries, answers "
                         f"{late_s * 1000:.0f} ms late, run {repeat + 1} of {REPEATS}")  # fmt: skip
                with _fresh(Path(tmp)) as url:
                    runs[late_s].append(_run(Path(tmp), url, late_s))
    at_once, late = (_summarise(runs[s]) for s in (0.0, LATE_S))
    return {
        "store": _store(), "burst": BURST, "late_ms": LATE_S * 1000, "repeats": REPEATS,
        "run_limit_s": RUN_LIMIT_S, "upstream_concurrency": _concurrency(),
        "at_once": at_once, "late": late,
        "late_over_at_once": late["deliveries_per_s"] / at_once["deliveries_per_s"],
        "goal_per_s": GOAL_PER_S, "met": late["deliveries_per_s"] >= GOAL_PER_S,
    }  # fmt: skip


def _store() -> str:
    return "postgresql" if os.environ.get("CARRYOVER_TEST_DATABASE_URL") else "sqlite"


@contextmanager
def _fresh(workdir: Path) -> Iterator[str]:
    """Yield the URL of an empty, migrated store, removed afterwards."""
    if _store() == "postgresql":
        base = os.environ["CARRYOVER_TEST_DATABASE_URL"]
        with fresh_schema(base, f"carryover_bench_fanout_{os.getpid()}") as url:
            yield url
        return
    database = workdir / f"run-{uuid.uuid4().hex[:8]}.db"
    url = f"sqlite:///{database}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    database.unlink()


def _concurrency() -> int | None:
    """Return the concurrency the runs set (None: a worker that has no such setting)."""
    return UPSTREAM_CONCURRENCY if "upstream_concurrency" in WORKER else None


def _config(url: str, zendesk_url: str) -> dict[str, Any]:
    """Return the configuration of the runs: the store, the fake Zendesk, no note budget."""
    worker: dict[str, Any] = {"enabled": True}
    if _concurrency() is not None:
        worker["upstream_concurrency"] = _concurrency()
    return {
        "database_url": url,
        "public_url": "http://127.0.0.1:8080",
        "allow_private_upstreams": True,  # the fake listens on 127.0.0.1
        "summary": {"note_on_first_contact": True},  # every delivery gets its note
        "worker": worker,
        "logging": {"level": "WARNING"},
        "integrations": {
            "zendesk": {"url": zendesk_url, "email": ZENDESK_EMAIL, "api_token": ZENDESK_TOKEN,
                        "webhook_secret": WEBHOOK_SECRET,
                        "ticket_updates_per_minute": 0},  # the budget would time itself
        },
    }  # fmt: skip


def _store_burst(url: str) -> None:
    """Store the burst through POST /hooks/zendesk, as Zendesk would send it."""
    raw = _config(url, "http://127.0.0.1:9")
    raw["worker"]["enabled"] = False
    core = build_installation(parse_config(raw, PluginRegistry.from_entry_points().schemas()))
    fixture = load_fixture("ticket_created.json")
    try:
        client = create_app(core=core).test_client()
        for n in range(BURST):
            ticket, requester = str(FIRST_TICKET + n), str(FIRST_USER + n)
            detail = dict(fixture["detail"], id=ticket, requester_id=requester,
                          submitter_id=requester)  # fmt: skip
            body = json.dumps(dict(fixture, id=str(uuid.uuid4()), detail=detail,
                                   subject=f"zen:ticket:{ticket}")).encode()  # fmt: skip
            response = client.post(HOOK_PATH, data=body, headers=signed_headers(body))
            if response.status_code != 200:
                raise RuntimeError(f"a delivery was answered {response.status_code}")
    finally:
        core.dispose()


def _seeded_fake(late_s: float) -> FakeZendesk:
    """Return a started fake Zendesk with the burst's requesters and tickets."""
    fake = FakeZendesk(ZENDESK_EMAIL, ZENDESK_TOKEN)
    for n in range(BURST):
        fake.add_user(FIRST_USER + n, f"Customer {n}", email=f"customer{n}@example.com")
        fake.add_ticket(FIRST_TICKET + n, FIRST_USER + n, f"Order {n} did not arrive")
    fake.delay_seconds = late_s
    return fake.start()


def _run(workdir: Path, url: str, late_s: float) -> dict[str, float]:
    """Process the burst with one worker process on a fresh store; return its rates."""
    _store_burst(url)
    fake = _seeded_fake(late_s)
    config = workdir / "fanout.yaml"
    config.write_text(yaml.safe_dump(_config(url, fake.url)), encoding="utf-8")
    worker = Server("carryover-worker", [str(CARRYOVER), "worker", "--config", str(config)], 0,
                    workdir)  # fmt: skip
    engine = make_engine(url)
    try:
        deadline = time.monotonic() + RUN_LIMIT_S
        while time.monotonic() < deadline:
            if worker.process.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
            if _done(engine)[0] == BURST and len(_note_times(fake)) == BURST:
                break
            time.sleep(0.2)
    finally:
        worker.stop()
        fake.stop()
    done, first, last = _done(engine)
    engine.dispose()
    notes = _note_times(fake)
    return {
        "deliveries": done,
        "deliveries_per_s": _rate(done, (last - first).total_seconds() if done > 1 else 0.0),
        "notes": len(notes),
        "notes_per_s": _rate(len(notes), notes[-1] - notes[0] if notes else 0.0),
    }


def _done(engine: Engine) -> tuple[int, datetime, datetime]:
    """Return how many deliveries are done, and when the first and the last was."""
    t = deliveries
    query = select(func.count(), func.min(t.c.finished_at), func.max(t.c.finished_at))
    with engine.connect() as conn:
        count, first, last = conn.execute(query.where(t.c.status == DONE)).one()
    return count, first or datetime.min, last or datetime.min


def _note_times(fake: FakeZendesk) -> list[float]:
    """Return when the fake received each note (its monotonic stamps, in order)."""
    with fake._lock:
        return [received for method, _path, body, received in fake.requests_log
                if method == "PUT" and NOTE_MARKER in body]  # fmt: skip


def _rate(count: int, seconds: float) -> float:
    """Return count - 1 intervals over the seconds from the first to the last (0: too few)."""
    return (count - 1) / seconds if count > 1 and seconds > 0 else 0.0


def _summarise(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Reduce one latency's runs to medians, keeping each run's figures."""
    return {
        "deliveries_per_s": median([run["deliveries_per_s"] for run in runs]),
        "notes_per_s": median([run["notes_per_s"] for run in runs]),
        "runs": runs,
    }
