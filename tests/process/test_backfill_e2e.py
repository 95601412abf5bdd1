"""Day one, as a new user runs it: `carryover backfill` against the three simulated tools.

The command runs in a subprocess, as an admin types it, against FakeZendesk, FakeSalesforce
and FakeTwilio served by the test process and seeded with a made-up year of history. What it
leaves in the store is read back, and what the fakes were asked is checked: an import reads
and never writes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import delete

from devkit.fake_server import AppServer
from devkit.history import (
    SF_SESSION,
    TWILIO_TOKEN,
    WEBHOOK_SECRET,
    ZENDESK_EMAIL,
    ZENDESK_TOKEN,
    HistorySummary,
    config_snippet,
    seed_history,
)
from devkit.simulators import zendesk as zendesk_simulator
from devkit.simulators.salesforce import FakeSalesforce
from devkit.simulators.twilio_rest import FakeTwilio
from devkit.simulators.zendesk import FakeZendesk
from middleware.config import load_config
from middleware.installation import Installation, build_installation
from middleware.integrations.registry import PluginRegistry
from middleware.process.backfill import DONE, FIRST_BATCH, RUNNING, latest_import
from middleware.process.worker import Worker
from middleware.store.tables import (
    customers,
    identities,
    interactions,
    metadata,
    writes,
)
from middleware.web.app import create_app
from tests.process.test_backfill import count, rows

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_SID = "AC" + "5eed" * 8
INBOUND_CALLS = 60
DELETED_TICKETS = (9001, 9002)  # Zendesk's export lists deleted tickets too, status "deleted"
RUN_TIMEOUT_S = 120
EXPORT_PAGE = 100
TOOK = r"(?:under 1 s|\d+ s)"  # how long an import took, as the summary says it
A_WEEK_AGO = datetime.now(UTC) - timedelta(days=7)


@dataclass
class Tools:
    """The three simulated tools, seeded, and what the seed made."""

    zendesk: FakeZendesk
    salesforce: FakeSalesforce
    twilio: FakeTwilio
    summary: HistorySummary

    def requests(self) -> list[tuple[str, str]]:
        """Return every API request the tools received: (method, path and query)."""
        fakes = (self.zendesk, self.salesforce, self.twilio)
        return [(method, path) for fake in fakes for method, path, _, _ in fake.requests_log]


@pytest.fixture
def tools(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tools]:
    """Serve the three tools holding 400 tickets of 120 requesters, 80 cases and 60 calls;
    Zendesk's export sends them 100 a page, so that an import reads several pages."""
    monkeypatch.setattr(zendesk_simulator, "EXPORT_PAGE_MAX", EXPORT_PAGE)
    zendesk = FakeZendesk(ZENDESK_EMAIL, ZENDESK_TOKEN, export_limit_per_minute=None)
    salesforce = FakeSalesforce(session_id=SF_SESSION)
    twilio = FakeTwilio(ACCOUNT_SID, TWILIO_TOKEN)
    summary = seed_history(zendesk, salesforce, twilio, requesters=120, tickets=400, cases=80,
                           calls=INBOUND_CALLS, days=300, seed=16)  # fmt: skip
    someone = summary.in_both[-1].zendesk_user_id
    for ticket_id in DELETED_TICKETS:
        zendesk.add_ticket(ticket_id, someone, "Spam", status="deleted", at=A_WEEK_AGO)
    with zendesk, salesforce, twilio:
        yield Tools(zendesk, salesforce, twilio, summary)


@pytest.fixture
def config_file(tools: Tools, database_url: str, tmp_path: Path) -> Path:
    """Write the config.yaml a new user writes: the store and the snippet naming the tools."""
    config = yaml.safe_load(config_snippet(tools.zendesk, tools.salesforce, tools.twilio))
    config.update(database_url=database_url, secret_key="e2e-secret-key",
                  worker={"backoff_base_s": 0.0})  # fmt: skip
    # The fake Zendesk is unlimited unless a test limits it; pacing would only slow the test.
    config["integrations"]["zendesk"]["export_requests_per_minute"] = 0
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def installation(config_file: Path) -> Iterator[Installation]:
    """Build the installation the config file describes, to read the store and run a worker."""
    registry = PluginRegistry.from_entry_points()
    built = build_installation(load_config(config_file, registry.schemas()), registry)
    yield built
    built.dispose()


def backfill_command(config_file: Path) -> list[str]:
    """Return the command an admin types to import a year of history."""
    return [sys.executable, "-m", "middleware.cli", "backfill", "--since", "365d",
            "--config", str(config_file)]  # fmt: skip


def backfill(config_file: Path) -> subprocess.CompletedProcess[str]:
    """Run `carryover backfill` to its end and return what it printed."""
    return subprocess.run(backfill_command(config_file), cwd=ROOT, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, check=False)  # fmt: skip


def imports(core: Installation) -> dict[str, Any]:
    """Return each integration's latest import."""
    with core.engine.connect() as conn:
        return {key: latest_import(conn, key) for key in ("salesforce", "twilio", "zendesk")}


def canonical(core: Installation) -> list[tuple[Any, ...]]:
    """Return the store's customers, each as its name, identities and interactions, sorted and
    free of row ids, to compare two stores."""
    names = {row.id: row.name for row in rows(core, customers)}
    found: dict[int | None, tuple[list[Any], list[Any]]] = {}
    for identity in rows(core, identities):
        entry = found.setdefault(identity.customer_id, ([], []))
        entry[0].append((identity.type, identity.value, identity.shared))
    for row in rows(core, interactions):
        entry = found.setdefault(row.customer_id, ([], []))
        candidates = len(json.loads(row.candidates or "[]"))
        entry[1].append((row.source, row.kind, row.external_id, row.number, row.status,
                         row.channel, row.occurred_at, row.subject, candidates))  # fmt: skip
    return sorted(
        (names.get(customer) or "", tuple(sorted(held)), tuple(sorted(had)))
        for customer, (held, had) in found.items()
    )


def empty_store(core: Installation) -> None:
    """Delete every row, leaving the migrated store as a fresh installation finds it."""
    with core.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(delete(table))


def expected_skips(tools: Tools) -> dict[str, dict[str, int]]:
    """Return what each import must skip, and why, given the seed."""
    legs = tools.summary.calls - INBOUND_CALLS
    return {
        "salesforce": {},
        "twilio": {"skipped: an agent's leg of another call": legs},
        "zendesk": {"skipped: deleted in Zendesk": len(DELETED_TICKETS)},
    }


def test_a_first_import_brings_every_tool_s_history_and_writes_nothing(
    tools: Tools, config_file: Path, installation: Installation
) -> None:
    """One run imports every ticket, case and call, skips deleted tickets and agents' legs with
    their reasons, makes one customer of someone both Zendesk and Salesforce know, and sends
    the tools nothing but reads."""
    run = backfill(config_file)
    assert run.returncode == 0, run.stderr
    seeded = tools.summary
    legs = seeded.calls - INBOUND_CALLS
    assert legs > 0, "the seed answered some calls"
    assert "nothing is written to any tool" in run.stdout
    for line in (
        f"Salesforce Service Cloud: done in <took>: {seeded.cases} imported, 0 already imported, "
        "0 skipped, 0 refused; 1 API call\n",
        f"Twilio: done in <took>: {INBOUND_CALLS} imported, 0 already imported, {legs} skipped, "
        "0 refused; 1 API call\n",
        f"  skipped: an agent's leg of another call ({legs})",
        f"Zendesk: done in <took>: {seeded.tickets} imported, 0 already imported, 2 skipped, "
        "0 refused; <n> API calls\n",
        "  skipped: deleted in Zendesk (2)",
    ):
        wanted = re.escape(line).replace("<took>", TOOK).replace("<n>", r"\d+")
        assert re.search(wanted, run.stdout), line
    assert f"100%  {seeded.tickets + 2} records" in run.stderr, "the progress line"
    found = imports(installation)
    assert {k: (s.status, s.imported, s.unchanged, s.refused) for k, s in found.items()} == {
        "salesforce": (DONE, seeded.cases, 0, 0),
        "twilio": (DONE, INBOUND_CALLS, 0, 0),
        "zendesk": (DONE, seeded.tickets, 0, 0),
    }
    assert {k: s.reasons for k, s in found.items()} == expected_skips(tools)
    kinds = Counter(r.kind for r in rows(installation))
    assert kinds == {"ticket": seeded.tickets, "case": seeded.cases, "call": INBOUND_CALLS}
    by_id = {r.external_id: r for r in rows(installation)}
    for sample in seeded.in_both:
        held = [by_id[str(t)] for t in sample.ticket_ids] + [by_id[c] for c in sample.case_ids]
        assert len({r.customer_id for r in held}) == 1, f"{sample.name} is one customer"
        for sid in sample.call_sids:
            # Their calls are theirs, or nobody's when their line is shared (a family line).
            call = by_id[sid]
            assert call.customer_id == held[0].customer_id or (
                call.customer_id is None and held[0].customer_id in json.loads(call.candidates)
            ), sid
    strong = Counter((i.type, i.value) for i in rows(installation, identities) if not i.shared)
    assert strong and max(strong.values()) == 1, "one customer per unshared id"
    assert count(installation, writes) == 0
    assert {method for method, _ in tools.requests()} == {"GET"}, "an import only reads"
    assert not any(tools.zendesk.notes(ticket_id) for ticket_id in tools.zendesk.tickets)
    assert tools.salesforce.records("CaseComment") == []


def test_running_it_again_imports_nothing_new(
    tools: Tools, config_file: Path, installation: Installation
) -> None:
    """A second run reads everything again, says it was all imported before, and leaves the
    store as it was."""
    assert backfill(config_file).returncode == 0
    before = store_rows(installation)
    run = backfill(config_file)
    assert run.returncode == 0, run.stderr
    seeded = tools.summary
    assert re.search(rf"Zendesk: done in {TOOK}: 0 imported, {seeded.tickets} already "
                     r"imported, 2 skipped, 0 refused", run.stdout), run.stdout  # fmt: skip
    assert re.search(rf"Salesforce Service Cloud: done in {TOOK}: 0 imported, {seeded.cases} "
                     r"already imported", run.stdout), run.stdout  # fmt: skip
    assert re.search(rf"Twilio: done in {TOOK}: 0 imported, {INBOUND_CALLS} already "
                     r"imported", run.stdout), run.stdout  # fmt: skip
    assert store_rows(installation) == before
    found = imports(installation)
    assert {k: (s.status, s.imported) for k, s in found.items()} == {
        "salesforce": (DONE, 0), "twilio": (DONE, 0), "zendesk": (DONE, 0),
    }  # fmt: skip
    assert {method for method, _ in tools.requests()} == {"GET"}


def test_an_import_killed_half_way_ends_as_a_clean_one_when_run_again(
    tools: Tools, config_file: Path, installation: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed with SIGKILL in the middle of the Zendesk export, the import run again continues
    and leaves the same customers and timelines as one clean run."""
    assert backfill(config_file).returncode == 0
    clean = canonical(installation)
    empty_store(installation)
    assert count(installation, interactions) == 0
    # A first page of several batches and a second page that waits a minute for Zendesk's
    # limit: the kill comes after a batch, before the page's cursor is kept, or at the latest
    # while the second page waits.
    monkeypatch.setattr(zendesk_simulator, "EXPORT_PAGE_MAX", 300)
    assert FIRST_BATCH < 300 < tools.summary.tickets
    tools.zendesk.set_export_limit(1)
    process = subprocess.Popen(backfill_command(config_file), cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        state = wait_for_zendesk_mid_import(installation, process)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=RUN_TIMEOUT_S)
    assert process.returncode == -signal.SIGKILL
    killed = imports(installation)["zendesk"]
    # A batch may have been committed between the look and the kill.
    assert killed.status == RUNNING and 0 < state.imported <= killed.imported
    assert killed.imported < tools.summary.tickets, "killed half-way"
    tools.zendesk.set_export_limit(None)
    run = backfill(config_file)
    assert run.returncode == 0, run.stderr
    assert "Zendesk: continuing the import begun" in run.stdout
    assert canonical(installation) == clean
    found = imports(installation)["zendesk"]
    assert (found.id, found.status, found.imported, found.unchanged) == (
        killed.id, DONE, tools.summary.tickets, 0
    )  # fmt: skip
    assert Counter(r.kind for r in rows(installation))["ticket"] == tools.summary.tickets


def test_a_tool_that_refuses_the_login_stops_only_its_own_import(
    tools: Tools, config_file: Path, installation: Installation
) -> None:
    """An expired Salesforce session stops the Salesforce import with the settings to check;
    the other tools are imported, and once the session is renewed a run again imports the
    cases alone."""
    tools.salesforce.expire_sessions()
    run = backfill(config_file)
    assert run.returncode == 1
    assert "Salesforce Service Cloud: cannot start: Salesforce refused session_id" in run.stderr
    assert "check integrations.salesforce: session_id and instance_url" in run.stderr
    found = imports(installation)
    assert found["salesforce"] is None
    assert (found["zendesk"].status, found["twilio"].status) == (DONE, DONE)
    assert Counter(r.kind for r in rows(installation)) == {
        "ticket": tools.summary.tickets, "call": INBOUND_CALLS
    }  # fmt: skip
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["integrations"]["salesforce"]["session_id"] = tools.salesforce.new_session()
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    run = backfill(config_file)
    assert run.returncode == 0, run.stderr
    assert {k: (s.status, s.imported) for k, s in imports(installation).items()} == {
        "salesforce": (DONE, tools.summary.cases), "twilio": (DONE, 0), "zendesk": (DONE, 0)
    }  # fmt: skip


def test_the_next_new_ticket_and_case_get_a_note_naming_the_imported_history(
    tools: Tools, config_file: Path, installation: Installation
) -> None:
    """After the import, a new ticket of a customer known to Zendesk and Salesforce gets one
    note naming their older tickets and cases, and no imported ticket or case gets any; their
    next new case gets one too, and updates go to their open tickets only."""
    assert backfill(config_file).returncode == 0
    sample = tools.summary.in_both[0]
    latest = max(sample.ticket_ids, key=lambda t: tools.zendesk.tickets[t]["created_at"])
    numbers = [tools.salesforce.case(c)["CaseNumber"] for c in sample.case_ids]
    with AppServer(create_app(core=installation)) as carryover:
        tools.zendesk.subscribe(f"{carryover.url}/hooks/zendesk", WEBHOOK_SECRET)
        tools.salesforce.subscribe(f"{carryover.url}/hooks/salesforce")
        ticket = tools.zendesk.open_ticket(
            sample.zendesk_user_id, "Still waiting", "Hi again, I'm still waiting for the refund."
        )
        Worker(installation).drain()
        tools.zendesk.wait_for_echoes()
        Worker(installation).drain()
        notes = {t: tools.zendesk.notes(t) for t in tools.zendesk.tickets}
        assert {t: len(n) for t, n in notes.items() if n} == {ticket: 1}, "one note, once"
        assert tools.salesforce.records("CaseComment") == []
        body = notes[ticket][0]["html_body"]
        assert f"#{latest} · " in body and tools.zendesk.tickets[latest]["subject"] in body
        assert any(f"case {number}" in body for number in numbers), "the Salesforce side"
        contact = next(filter(None, (tools.salesforce.case(c)["ContactId"]
                                     for c in sample.case_ids)))  # fmt: skip
        case = tools.salesforce.open_case(contact, "Refund", "Still no refund.", origin="Email")
        Worker(installation).drain()
        tools.zendesk.wait_for_echoes()
        Worker(installation).drain()
    comments = [c["CommentBody"] for c in tools.salesforce.records("CaseComment")]
    assert comments == [c["CommentBody"] for c in tools.salesforce.comments(case)]
    assert len(comments) == 1
    assert f"#{latest} · " in comments[0] and f"#{ticket} · " in comments[0]
    # The new case is news for the customer's open tickets, imported ones included.
    still_open = open_tickets(tools, sample.ticket_ids)
    assert still_open, "the seed left this customer an open ticket"
    updated = {t for t in tools.zendesk.tickets if len(tools.zendesk.notes(t)) > (t == ticket)}
    assert updated == {ticket, *still_open}


def open_tickets(tools: Tools, ticket_ids: Iterable[int]) -> set[int]:
    """Return the tickets that are open (not solved or closed) and changed in the last 30 days."""
    recent = datetime.now(UTC) - timedelta(days=30)
    return {
        t for t in ticket_ids
        if tools.zendesk.tickets[t]["status"] not in ("solved", "closed")
        and datetime.fromisoformat(tools.zendesk.tickets[t]["updated_at"]) > recent
    }  # fmt: skip


def wait_for_zendesk_mid_import(core: Installation, process: subprocess.Popen[str]) -> Any:
    """Wait until the Zendesk import has recorded a page and is running; return its state."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        state = imports(core)["zendesk"]
        if state is not None and state.imported > 0:
            assert state.status == RUNNING
            return state
        time.sleep(0.05)
    raise AssertionError("the Zendesk import recorded no page")


def store_rows(core: Installation) -> list[list[tuple[Any, ...]]]:
    """Return every row of the customers, identities and interactions tables."""
    return [[tuple(row) for row in rows(core, table)]
            for table in (customers, identities, interactions)]  # fmt: skip
