"""News that crosses tools: a new case, ticket or SMS puts one short update note on each of the
customer's open items in the other tools (exactly once, never echoed, switchable per tool)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from devkit.simulators.salesforce import FakeSalesforce
from devkit.simulators.zendesk import FakeZendesk
from middleware.installation import Installation, build_installation
from middleware.notes.outbox import MARKER_PATTERN
from middleware.process.worker import Worker
from middleware.store.tables import writes
from middleware.web.app import create_app
from tests.actions import ConfigFactory, Hooks
from tests.payloads import fixture_bytes, twilio_fields

SESSION = "00D000000000001!AQ.fixed.session.for.tests"
ANN_EMAIL = "ann.example@example.com"
ANN_PHONE = "+14155550142"
STAMP = re.compile(r"\w{3} \d{1,2} \w{3}( \d{4})? \d\d:\d\d")


@pytest.fixture
def salesforce() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(session_id=SESSION) as running:
        yield running


class Tools:
    """Carryover connected to Zendesk, Salesforce and Twilio, with Ann known to all three."""

    def __init__(self, core: Installation, zendesk: FakeZendesk, salesforce: FakeSalesforce):
        self.core = core
        self.zendesk = zendesk
        self.salesforce = salesforce
        self.hooks = Hooks(create_app(core=core).test_client())
        self.worker = Worker(core, name="test")
        self.ann_contact = salesforce.add_contact("Ann", "Example", email=ANN_EMAIL)

    def zendesk_ticket(self, ticket_id: str, age: timedelta = timedelta(0), **detail: Any) -> None:
        """Ann's new Zendesk ticket (an email), created `age` ago."""
        payload = json.loads(fixture_bytes("ticket_created__mail.json"))
        moment = (datetime.now(UTC) - age).strftime("%Y-%m-%dT%H:%M:%SZ")
        payload["id"] = str(uuid.uuid4())
        payload["time"] = moment
        payload["detail"].update(id=ticket_id, created_at=moment, updated_at=moment, **detail)
        assert self.hooks.zendesk(json.dumps(payload).encode()).status_code == 200
        self.worker.drain()

    def salesforce_case(self, subject: str, **fields: Any) -> str:
        """Billing opens a case for Ann by phone; its Outbound Message arrives."""
        case = self.salesforce.add_case(subject, self.ann_contact, "Phone", **fields)
        self.send_case(case)
        return case

    def send_case(self, case: str) -> None:
        message = self.salesforce.outbound_message([("Case", self.salesforce.case_fields(case))])
        assert self.hooks.salesforce(message).status_code == 200
        self.worker.drain()

    def sms(self, text: str, sid: str = "SM" + "1" * 32) -> None:
        fields = twilio_fields("message_received.form", Body=text, MessageSid=sid, SmsSid=sid)
        assert self.hooks.twilio(fields).status_code == 200
        self.worker.drain()

    def updates(self, ticket_id: int) -> list[str]:
        """The update notes on a Zendesk ticket, their marker and times taken out."""
        return [undated(n["body"]) for n in self.zendesk.notes(ticket_id)]

    def case_updates(self, case: str) -> list[str]:
        return [undated(c["CommentBody"]) for c in self.salesforce.comments(case)]

    def purposes(self) -> list[tuple[str, str, str]]:
        with self.core.engine.connect() as conn:
            rows = conn.execute(select(writes).order_by(writes.c.id))
            return [(r.target, r.target_ref, r.purpose) for r in rows]


def undated(body: str) -> str:
    """A note as text: no marker, times as <when>, lines unindented (Zendesk's HTML)."""
    text = STAMP.sub("<when>", MARKER_PATTERN.sub("", body)).strip()
    return "\n".join(line.strip() for line in text.splitlines())


@pytest.fixture
def tools(
    database_url: str,
    fake_zendesk: FakeZendesk,
    salesforce: FakeSalesforce,
    make_config: ConfigFactory,
) -> Iterator[Callable[..., Tools]]:
    built: list[Installation] = []

    def connect(zendesk: dict[str, Any] | None = None, **sf: Any) -> Tools:
        settings = {"organization_id": salesforce.org_id, "instance_url": salesforce.url,
                    "session_id": SESSION, **sf}  # fmt: skip
        config = make_config(database_url, fake_zendesk.url, zendesk, phone=True,
                             salesforce=settings)  # fmt: skip
        core = build_installation(config)
        built.append(core)
        return Tools(core, fake_zendesk, salesforce)

    yield connect
    for core in built:
        core.dispose()


def test_billing_opening_a_case_tells_supports_open_ticket_once(tools):
    """The open ticket gets one update naming the case by its number, with its link; the
    same notification again, and the note's own echo, add nothing."""
    t = tools()
    t.zendesk_ticket("5141")
    case = t.salesforce_case("Double charge on INV-1042", description="Refund one charge.")
    number = t.salesforce.case(case)["CaseNumber"]
    assert t.updates(5141) == [
        f'New Salesforce case {number} for Ann Example, <when>: "Double charge on INV-1042"\n'
        f"{t.salesforce.url}/lightning/r/Case/{case}/view"
    ]  # billing's own description is not Ann's words: it is not quoted
    t.send_case(case)  # Salesforce retries a notification it thinks was lost
    echo = json.loads(fixture_bytes("ticket_comment_added__own_note.json"))
    echo["id"] = str(uuid.uuid4())
    echo["detail"]["id"] = "5141"
    echo["event"]["comment"]["body"] = t.zendesk.notes(5141)[0]["body"]
    assert t.hooks.zendesk(json.dumps(echo).encode()).status_code == 200
    t.worker.drain()
    assert len(t.zendesk.notes(5141)) == 1
    assert t.purposes().count(("zendesk", "5141", "update")) == 1


def test_a_ticket_the_customer_opens_tells_the_open_case_with_her_words(tools):
    """A new Zendesk ticket of Ann's puts an update on her open case, quoting her (redacted)."""
    t = tools()
    case = t.salesforce_case("Double charge on INV-1042")
    t.zendesk_ticket("5149")
    assert t.case_updates(case) == [
        "Ann Example opened Zendesk ticket #5149 by email, <when>: "
        '"Charged twice for my January invoice"\n'
        f"{t.zendesk.url}/agent/tickets/5149\n"
        '"Hi, I was charged twice for invoice INV-2025-001. Card [card ending 1111] shows two '
        'payments. Please refund one."'
    ]


def test_an_sms_tells_every_open_item_in_the_other_tools(tools):
    """An inbound SMS: one update on the open ticket and one on the open case."""
    t = tools()
    t.zendesk_ticket("5141")
    case = t.salesforce_case("Double charge on INV-1042")
    t.sms("Any news on my refund?")
    sms = 'Ann Example sent an SMS, <when>\n"Any news on my refund?"'
    assert t.updates(5141)[-1] == sms
    assert t.case_updates(case)[-1] == sms
    t.sms("Any news on my refund?")  # Twilio retries the same message
    assert [p for p in t.purposes() if p[2] == "update"] == [
        ("zendesk", "5141", "update"),
        ("zendesk", "5141", "update"),
        ("salesforce", case, "update"),
    ]  # the case's update of the ticket, and one per item of the SMS


def test_a_new_ticket_tells_no_other_ticket_of_the_same_tool(tools):
    """Zendesk's agents see Zendesk's tickets already: only other tools get the news."""
    t = tools()
    t.zendesk_ticket("5141")
    t.zendesk_ticket("5149")
    assert not [p for p in t.purposes() if p[2] == "update"]


def test_solved_and_stale_items_get_no_update(tools):
    """Only items open and updated within call_notes.open_days (30) hear of news."""
    t = tools()
    t.zendesk_ticket("5141", timedelta(days=45))
    t.zendesk_ticket("5149", timedelta(days=1), status="SOLVED")
    t.zendesk_ticket("5158", timedelta(days=3))
    t.salesforce_case("Double charge on INV-1042")
    updated = [ref for target, ref, purpose in t.purposes() if purpose == "update"]
    assert updated == ["5158"]


def test_a_tool_with_update_notes_off_hears_of_nothing_calls_included(tools):
    """update_notes: false on Zendesk: its tickets get no updates and no call notes; the
    other tools still do."""
    t = tools(zendesk={"update_notes": False})
    t.zendesk_ticket("5141")
    case = t.salesforce_case("Double charge on INV-1042")
    t.sms("Any news on my refund?")
    for name in ("call_started__ringing.form", "call_ended__completed.form"):
        assert t.hooks.twilio(twilio_fields(name)).status_code == 200
    t.worker.drain()
    assert t.zendesk.notes(5141) == []
    assert [u.splitlines()[0] for u in t.case_updates(case)][-2:] == [
        "Ann Example sent an SMS, <when>",
        "Phone call <when>, 4 min 32 s, no agent recorded",
    ]
