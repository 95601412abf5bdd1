"""The generated history: its counts, its people across the three fakes, its determinism."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
import requests
import yaml

from devkit.history import HistorySummary, seed_history
from devkit.simulators.salesforce import API_VERSION, FakeSalesforce
from devkit.simulators.twilio_rest import FakeTwilio
from devkit.simulators.zendesk import EXPORT_PATH, FakeZendesk

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SESSION = "00D000000000001!AQ.history.tests"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Fakes:
    """The three fakes a history is seeded into."""

    zendesk: FakeZendesk
    salesforce: FakeSalesforce
    twilio: FakeTwilio

    def seed(self, **options: Any) -> HistorySummary:
        """Seed the default history (or as `options` say) at NOW."""
        return seed_history(self.zendesk, self.salesforce, self.twilio, now=NOW, **options)

    def contents(self) -> tuple[Any, ...]:
        """Return what the fakes hold, without their own URLs, to compare two histories."""
        tickets = [
            {k: v for k, v in t.items() if k != "url"} for t in self.zendesk.tickets.values()
        ]
        users = [{k: v for k, v in u.items() if k not in ("url", "created_at", "updated_at")}
                 for u in self.zendesk.users.values()]  # fmt: skip
        cases = self.salesforce.records("Case")
        calls = [
            {k: v for k, v in c.items() if k != "account_sid"} for c in self.twilio.calls.values()
        ]
        return tickets, users, cases, [c["sid"] for c in calls], [c["from"] for c in calls]


def _fakes() -> Fakes:
    return Fakes(FakeZendesk(), FakeSalesforce(session_id=SESSION), FakeTwilio())


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    """Serve the three fakes, empty."""
    made = _fakes()
    for fake in (made.zendesk, made.salesforce, made.twilio):
        fake.start()
    yield made
    for fake in (made.zendesk, made.salesforce, made.twilio):
        fake.stop()


@pytest.fixture
def seeded(fakes: Fakes) -> tuple[Fakes, HistorySummary]:
    """Serve the three fakes with the default history."""
    return fakes, fakes.seed()


def test_the_default_history_has_the_asked_for_counts(seeded: tuple[Fakes, HistorySummary]) -> None:
    """500 requesters, 2,000 tickets, 300 cases, and calls with their agents' legs."""
    fakes, summary = seeded
    end_users = [u for u in fakes.zendesk.users.values() if u["role"] == "end-user"]
    agents = [u for u in fakes.zendesk.users.values() if u["role"] == "agent"]
    assert (summary.requesters, len(end_users)) == (500, 500)
    assert (summary.tickets, len(fakes.zendesk.tickets)) == (2000, 2000)
    assert summary.cases == 300 == len(fakes.salesforce.records("Case"))
    assert summary.contacts == len(fakes.salesforce.records("Contact")) > 50
    assert summary.calls == len(fakes.twilio.calls)
    inbound = [c for c in fakes.twilio.calls.values() if c["direction"] == "inbound"]
    assert len(inbound) == 400
    assert summary.agents == len(agents) - 1  # the fake's own API user is an agent too


def test_people_look_like_real_customers(seeded: tuple[Fakes, HistorySummary]) -> None:
    """Valid +1 555-01xx phones over several areas, example domains, family lines, no-email."""
    fakes, _ = seeded
    end_users = [u for u in fakes.zendesk.users.values() if u["role"] == "end-user"]
    phones = [u["phone"] for u in end_users]
    assert all(re.fullmatch(r"\+1\d{3}55501\d\d", p) for p in phones)
    assert all(phonenumbers.is_valid_number(phonenumbers.parse(p)) for p in phones)
    assert len({p[2:5] for p in phones}) >= 6
    assert any(count > 1 for count in Counter(phones).values())  # a family line
    emails = [u["email"] for u in end_users if u["email"]]
    assert 0 < len(end_users) - len(emails) < 50
    assert {e.rsplit("@", 1)[1] for e in emails} == {"example.com", "example.org", "example.net"}
    kinds = Counter(i["type"] for ids in fakes.zendesk.identities.values() for i in ids)
    assert kinds["twitter"] > 10 and kinds["facebook"] > 10


def test_tickets_span_the_year_channels_and_statuses(seeded: tuple[Fakes, HistorySummary]) -> None:
    """Tickets spread over a year and eight channels; old ones closed, recent ones open."""
    fakes, _ = seeded
    tickets = list(fakes.zendesk.tickets.values())
    channels = Counter(t["via"]["channel"] for t in tickets)
    assert set(channels) == {"email", "web", "chat", "voice", "native_messaging", "api",
                             "facebook", "twitter"}  # fmt: skip
    created = [datetime.fromisoformat(t["created_at"]) for t in tickets]
    assert NOW - timedelta(days=366) < min(created) and max(created) < NOW - timedelta(minutes=4)
    old = [t for t in tickets if datetime.fromisoformat(t["created_at"]) < NOW - timedelta(days=60)]
    assert sum(t["status"] == "closed" for t in old) > 0.7 * len(old)
    recent = [
        t for t in tickets if datetime.fromisoformat(t["created_at"]) > NOW - timedelta(days=7)
    ]
    assert any(t["status"] in ("new", "open", "pending") for t in recent)
    assert all(t["updated_at"] >= t["created_at"] for t in tickets)
    assert sum(t["assignee_id"] is not None for t in tickets) > 1000
    no_email = {u["id"] for u in fakes.zendesk.users.values() if u["email"] is None}
    assert all(t["via"]["channel"] in ("voice", "native_messaging", "chat")
               for t in tickets if t["requester_id"] in no_email)  # fmt: skip
    first = fakes.zendesk.comments[tickets[0]["id"]][0]
    assert first["author_id"] == tickets[0]["requester_id"]
    assert first["body"] == tickets[0]["description"] and len(first["body"]) > 40


def test_cases_share_people_with_zendesk(seeded: tuple[Fakes, HistorySummary]) -> None:
    """Contacts carry requesters' emails; some cases have no contact but a SuppliedEmail."""
    fakes, summary = seeded
    emails = {u["email"] for u in fakes.zendesk.users.values() if u["email"]}
    contacts = fakes.salesforce.records("Contact")
    assert all(c["Email"] in emails for c in contacts)
    cases = fakes.salesforce.records("Case")
    loose = [c for c in cases if c["ContactId"] is None]
    assert loose and all(c["SuppliedEmail"] in emails and c["SuppliedName"] for c in loose)
    assert {c["Origin"] for c in cases} == {"Email", "Phone", "Web"}
    assert all(c["IsClosed"] == (c["Status"] == "Closed") for c in cases)
    assert len(summary.in_both) == 5
    sample = summary.in_both[0]
    assert all(fakes.zendesk.tickets[t]["requester_id"] == sample.zendesk_user_id
               for t in sample.ticket_ids)  # fmt: skip
    for case_id in sample.case_ids:
        case = fakes.salesforce.case(case_id)
        contact = case["ContactId"] and fakes.salesforce.contact(case["ContactId"])
        assert (contact["Email"] if contact else case["SuppliedEmail"]) == sample.email


def test_calls_come_from_the_requesters_numbers(seeded: tuple[Fakes, HistorySummary]) -> None:
    """Inbound calls come from requesters' phones; answered ones have an agent's leg."""
    fakes, _ = seeded
    phones = {u["phone"] for u in fakes.zendesk.users.values()}
    calls = list(fakes.twilio.calls.values())
    inbound = [c for c in calls if c["direction"] == "inbound"]
    assert all(c["from"] in phones for c in inbound)
    legs = [c for c in calls if c["direction"] == "outbound-dial"]
    answered = {c["sid"] for c in inbound if c["status"] == "completed"}
    assert {leg["parent_call_sid"] for leg in legs} == answered
    assert {c["status"] for c in inbound} == {"completed", "no-answer", "busy"}


def test_reserved_numbers_stay_out_of_the_history(fakes: Fakes) -> None:
    """No user, contact or call of the history has a number the caller keeps for itself."""
    reserved = {f"+1415555{n:04d}" for n in range(100, 200)}  # one area code of eight
    fakes.seed(reserved_phones=reserved)
    users = [u["phone"] for u in fakes.zendesk.users.values()]
    contacts = fakes.salesforce.records("Contact")
    contact_phones = [c[f] for c in contacts for f in ("Phone", "MobilePhone")]
    callers = [c["from"] for c in fakes.twilio.calls.values()]
    assert any(phone and phone.startswith("+1212") for phone in users + contact_phones)
    assert not reserved & {*users, *contact_phones, *callers}


def test_the_same_seed_gives_the_same_history() -> None:
    """Two seedings with one seed and moment hold the same records; another seed differs."""
    first, second, other = _fakes(), _fakes(), _fakes()
    try:
        assert first.seed(seed=7) == second.seed(seed=7)
        assert first.contents() == second.contents()
        other.seed(seed=8)
        assert other.contents() != first.contents()
    finally:
        for fakes in (first, second, other):
            for fake in (fakes.zendesk, fakes.salesforce, fakes.twilio):
                fake.stop()


def test_sizes_are_arguments(fakes: Fakes) -> None:
    """requesters, tickets, cases, calls and days shape a smaller history."""
    summary = fakes.seed(requesters=20, tickets=50, cases=10, calls=5, days=30)
    assert (summary.requesters, summary.tickets, summary.cases) == (20, 50, 10)
    oldest = min(datetime.fromisoformat(t["created_at"]) for t in fakes.zendesk.tickets.values())
    assert oldest > NOW - timedelta(days=31)


def test_the_history_comes_out_of_the_export_endpoints(
    seeded: tuple[Fakes, HistorySummary],
) -> None:
    """Zendesk's export, a Salesforce COUNT() and Twilio's list find the whole history."""
    fakes, summary = seeded
    start = int((NOW - timedelta(days=400)).timestamp())
    zendesk_auth = (f"{fakes.zendesk.email}/token", fakes.zendesk.api_token)
    url = f"{fakes.zendesk.url}{EXPORT_PATH}?start_time={start}"
    exported = 0
    while url:
        page = requests.get(url, auth=zendesk_auth, timeout=10).json()
        exported += len(page["tickets"])
        url = None if page["end_of_stream"] else page["after_url"]
    assert exported == summary.tickets
    soql = "SELECT COUNT() FROM Case WHERE LastModifiedDate >= 2025-01-01T00:00:00Z"
    counted = requests.get(
        f"{fakes.salesforce.url}/services/data/v{API_VERSION}/query/",
        params={"q": soql},
        headers={"Authorization": f"Bearer {SESSION}"},
        timeout=10,
    ).json()
    assert counted["totalSize"] == summary.cases
    twilio = fakes.twilio
    listed = requests.get(
        f"{twilio.url}/2010-04-01/Accounts/{twilio.account_sid}/Calls.json",
        params={"PageSize": 1000},
        auth=(twilio.account_sid, twilio.auth_token),
        timeout=10,
    ).json()
    assert len(listed["calls"]) == summary.calls


def test_serve_prints_a_config_and_stops_on_ctrl_c() -> None:
    """--serve prints URLs and a config snippet that parses, and exits cleanly on SIGINT."""
    command = [sys.executable, "-m", "devkit.history", "--serve", "--requesters", "30",
               "--tickets", "40", "--cases", "10", "--calls", "5", "--zendesk-port", "0",
               "--salesforce-port", "0", "--twilio-port", "0"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env) as served:
        assert served.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("Ctrl-C"):
            line = served.stdout.readline()
            assert line, "the server stopped before it was ready"
            lines.append(line)
        served.send_signal(signal.SIGINT)
        assert served.wait(timeout=10) == 0
    text = "".join(lines)
    snippet = text.split("Paste into config.yaml:\n", 1)[1].rsplit("Ctrl-C", 1)[0]
    config = yaml.safe_load(snippet)
    integrations = config["integrations"]
    assert set(integrations["zendesk"]) == {"url", "email", "api_token", "webhook_secret"}
    assert {"instance_url", "session_id", "organization_id"} <= set(integrations["salesforce"])
    assert set(integrations["twilio"]) == {"auth_token", "account_sid", "api_url"}
    zendesk = integrations["zendesk"]
    assert zendesk["url"].startswith("http://127.0.0.1:")
    assert "Zendesk    http://127.0.0.1:" in text and "40 tickets)" in text
