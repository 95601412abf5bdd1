"""Benchmark 10: importing the history that exists (`carryover backfill`) against the fakes.

The fake Zendesk, Salesforce and Twilio hold what devkit.history makes (500 requesters with
2,000 tickets over a year, 300 cases, 400 calls and their agents' legs), answer at once and
set no export limit. On each store (SQLite, and PostgreSQL when CARRYOVER_TEST_DATABASE_URL
names one), REPEATS times on a fresh store:

- the import: the three integrations' history since 365 days, as `carryover backfill` runs
  it (HistoryImport, in this process, beside the fakes' threads), timed per integration;
- the baseline of the same run: WEBHOOKS signed `ticket.created` deliveries of as many other
  requesters, stored through `POST /hooks/zendesk` and then processed by the worker
  (Worker.drain) on a fresh store of their own, timing the processing only. Each is a
  first contact (no note), so both sides do the same work for a record: map, enrich,
  resolve the customer, append it to the timeline.

The figures are medians of the repeats: records imported per second, API calls, and the
import's cost per record over a webhook's processing cost per delivery.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.deliveries import HOOK_PATH, WEBHOOK_SECRET, load_fixture, signed_headers
from bench.faults import fresh_schema
from bench.report import median, progress
from devkit.history import (
    FIRST_USER_ID,
    SF_SESSION,
    TWILIO_TOKEN,
    ZENDESK_EMAIL,
    ZENDESK_TOKEN,
    seed_history,
)
from devkit.simulators.salesforce import FakeSalesforce
from devkit.simulators.twilio_rest import FakeTwilio
from devkit.simulators.zendesk import FakeZendesk
from middleware.config import parse_config
from middleware.installation import Installation, build_installation
from middleware.integrations.registry import PluginRegistry
from middleware.process.backfill import DONE, HistoryImport, parse_since
from middleware.process.worker import Worker
from middleware.store.tables import upgrade
from middleware.web.app import create_app

REPEATS = 3
REQUESTERS, TICKETS, CASES, CALLS = 500, 2000, 300, 400
WEBHOOKS = 300  # first contacts of as many requesters
TOOLS = ("zendesk", "salesforce", "twilio")
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
GOAL_PER_S = 1000.0  # records imported per second on SQLite


def history_benchmark() -> dict[str, Any]:
    """Benchmark 10 on every store this machine has; return the figures per store."""
    zendesk = FakeZendesk(ZENDESK_EMAIL, ZENDESK_TOKEN, export_limit_per_minute=None)
    salesforce = FakeSalesforce(session_id=SF_SESSION)
    twilio = FakeTwilio(ACCOUNT_SID, TWILIO_TOKEN)
    summary = seed_history(zendesk, salesforce, twilio, requesters=REQUESTERS, tickets=TICKETS,
                           cases=CASES, calls=CALLS)  # fmt: skip
    results: dict[str, Any] = {
        "history": {"requesters": summary.requesters, "tickets": summary.tickets,
                    "cases": summary.cases, "calls": summary.calls},
        "repeats": REPEATS, "webhooks": WEBHOOKS,
    }  # fmt: skip
    with zendesk, salesforce, twilio:
        fakes = (zendesk, salesforce, twilio)
        for store in _stores():
            runs = []
            for repeat in range(REPEATS):
                progress(f"history import on {store}: run {repeat + 1} of {REPEATS}")
                with _fresh(store) as url:
                    imported = _import_all(_install(url, *fakes))
                with _fresh(store) as url:
                    webhooks = _process_webhooks(_install(url, *fakes))
                runs.append(imported | {"webhook_s_per_delivery": webhooks})
            results[store] = _summarise(runs)
    results["sqlite"]["goal_per_s"] = GOAL_PER_S
    results["sqlite"]["met"] = results["sqlite"]["per_s"] >= GOAL_PER_S
    return results


def _stores() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("CARRYOVER_TEST_DATABASE_URL") else ["sqlite"]


@contextmanager
def _fresh(store: str) -> Iterator[str]:
    """Yield the URL of an empty store of that kind, removed afterwards."""
    if store == "postgresql":
        base = os.environ["CARRYOVER_TEST_DATABASE_URL"]
        with fresh_schema(base, f"carryover_bench_history_{os.getpid()}") as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="carryover-bench-history-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'carryover.db'}"
        yield url


def _install(
    url: str, zendesk: FakeZendesk, salesforce: FakeSalesforce, twilio: FakeTwilio
) -> Installation:
    """Build an installation on the store, connected to the three fakes, and migrate it."""
    raw = {
        "database_url": url,
        "public_url": "http://127.0.0.1:8080",
        "allow_private_upstreams": True,  # the fakes listen on 127.0.0.1
        "integrations": {
            "zendesk": {"url": zendesk.url, "email": ZENDESK_EMAIL, "api_token": ZENDESK_TOKEN,
                        "webhook_secret": WEBHOOK_SECRET, "export_requests_per_minute": 0},
            "salesforce": {"organization_id": salesforce.org_id,
                           "instance_url": salesforce.url, "session_id": SF_SESSION},
            "twilio": {"auth_token": TWILIO_TOKEN, "account_sid": twilio.account_sid,
                       "api_url": twilio.api_url},
        },
    }  # fmt: skip
    core = build_installation(parse_config(raw, PluginRegistry.from_entry_points().schemas()))
    upgrade(core.engine)
    return core


def _import_all(core: Installation) -> dict[str, Any]:
    """Import each integration's history since 365 days; time each and all together."""
    since = parse_since("365d")
    figures: dict[str, Any] = {"imported": 0, "records": 0, "seconds": 0.0, "api_calls": 0}
    try:
        for key in TOOLS:
            started = time.perf_counter()
            state = HistoryImport(core, core.registry.instances[key], since).run()
            seconds = time.perf_counter() - started
            if state.status != DONE:
                raise RuntimeError(f"the {key} import did not finish: {state.last_error}")
            figures[key] = {"imported": state.imported, "records": state.records,
                            "seconds": seconds, "api_calls": state.api_calls}  # fmt: skip
            for name in ("imported", "records", "seconds", "api_calls"):
                figures[name] += figures[key][name]
    finally:
        core.dispose()
    return figures


def _process_webhooks(core: Installation) -> float:
    """Store WEBHOOKS first contacts through the endpoint, then time their processing;
    return the seconds per delivery."""
    client = create_app(core=core).test_client()
    fixture = load_fixture("ticket_created.json")
    try:
        for n in range(WEBHOOKS):
            ticket, requester = str(900000 + n), str(FIRST_USER_ID + n)
            detail = dict(fixture["detail"], id=ticket, requester_id=requester,
                          submitter_id=requester)  # fmt: skip
            body = json.dumps(dict(fixture, id=str(uuid.uuid4()), detail=detail,
                                   subject=f"zen:ticket:{ticket}")).encode()  # fmt: skip
            response = client.post(HOOK_PATH, data=body, headers=signed_headers(body))
            if response.status_code != 200:
                raise RuntimeError(f"a delivery was answered {response.status_code}")
        worker = Worker(core, name=f"bench-{uuid.uuid4().hex[:8]}")
        started = time.perf_counter()
        processed = worker.drain(rounds=WEBHOOKS * 2)
        seconds = time.perf_counter() - started
    finally:
        core.dispose()
    if processed < WEBHOOKS:
        raise RuntimeError(f"the worker processed {processed} of {WEBHOOKS} deliveries")
    return seconds / WEBHOOKS


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Reduce the repeats to medians: per second, per record, against a webhook."""
    per_s = [run["imported"] / run["seconds"] for run in runs]
    per_record = [run["seconds"] / run["imported"] for run in runs]
    webhook = [run["webhook_s_per_delivery"] for run in runs]
    tools = {
        key: {
            "imported": runs[0][key]["imported"],
            "records": runs[0][key]["records"],
            "api_calls": runs[0][key]["api_calls"],
            "per_s": median([run[key]["imported"] / run[key]["seconds"] for run in runs]),
        }
        for key in TOOLS
    }
    return {
        "runs_per_s": [round(p, 1) for p in per_s],
        "per_s": median(per_s),
        "imported": runs[0]["imported"],
        "api_calls": runs[0]["api_calls"],
        "ms_per_record": median([p * 1000 for p in per_record]),
        "webhook_ms_per_delivery": median([w * 1000 for w in webhook]),
        "webhook_over_record": median([w / p for w, p in zip(webhook, per_record, strict=True)]),
        "tools": tools,
    }
