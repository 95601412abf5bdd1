"""The scale-out topology end to end: two web processes and two workers on one PostgreSQL.

Real processes, as an operator runs them: `carryover serve --processes 2` (two web processes
under gunicorn, no embedded worker) and two `carryover worker` processes share one store,
beside a fake Zendesk and a fake Salesforce.

- A pop open in a web process shows a call that a worker (another process) processed;
  `pop.poll_s` is a minute, so only the store's notification can bring it in time.
- Signed webhooks of every kind (Zendesk, Salesforce, Twilio calls and SMS, CTI, Shopify, the
  generic inbound) go to the web processes, some twice, while the fakes answer slowly; one
  worker is killed with SIGKILL while it holds work.
- Then every acknowledged delivery was stored once and processed, every note the store
  counts as written is found upstream exactly once (by its marker), and no marker twice.
"""

from __future__ import annotations

import html
import json
import re
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests
import yaml
from sqlalchemy import func, select

from bench.faults import Processes, Store, empty_tables, wait_until
from bench.phone import EventStream
from bench.servers import HOST, Server, free_port
from devkit.simulators.salesforce import FakeSalesforce
from devkit.simulators.zendesk import FakeZendesk
from middleware.notes.outbox import MARKER_PATTERN
from middleware.store.tables import deliveries, interactions, writes
from plugins.twilio import sign as twilio_sign
from tests.conftest import raw_config
from tests.payloads import (
    cti_body,
    cti_headers,
    generic_body,
    generic_headers,
    shopify_body,
    shopify_headers,
    twilio_fields,
    zendesk_event,
    zendesk_headers,
)
from tests.values import (
    AGENT_KEY,
    PG_URL,
    PUBLIC_URL,
    SF_ORG,
    SF_SESSION,
    TWILIO_TOKEN,
    ZENDESK_EMAIL,
    ZENDESK_TOKEN,
)

pytestmark = pytest.mark.skipif(not PG_URL, reason="CARRYOVER_TEST_DATABASE_URL is not set")

CUSTOMERS = 12
FIRST_USER = 9_100
FIRST_EARLIER_TICKET = 7_100  # each customer's earlier ticket: their history
FIRST_NEW_TICKET = 8_100  # each customer's new ticket: due a summary note
UPSTREAM_DELAY_S = 0.15  # every API answer, so that workers hold work when one is killed
LEASE_S = 3  # a killed worker's rows are taken over this soon
# Bounds for a failing test only: what they wait for comes in well under a second (the pop)
# or within seconds (the drain).
POP_WAIT_S = 20.0
DRAIN_WAIT_S = 180.0
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}


def phone_of(index: int) -> str:
    """Return customer `index`'s phone number (E.164)."""
    return f"+1415555{1_000 + index:04d}"


def email_of(index: int) -> str:
    """Return customer `index`'s email address."""
    return f"customer{index}@example.com"


@dataclass(frozen=True)
class Sent:
    """One delivery as a sender posts it: where, the body and the signed headers."""

    path: str
    body: bytes
    headers: dict[str, str]


class Senders:
    """Post deliveries to the web processes; remember how many were acknowledged."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged = 0  # distinct deliveries answered 200
        self.failures: list[str] = []

    def post(self, sent: Sent, again: bool = False) -> None:
        """Post one delivery (each on a connection of its own); with again, a second time."""
        for attempt in range(2 if again else 1):
            answer = requests.post(self.url + sent.path, data=sent.body, headers=sent.headers,
                                   timeout=30)  # fmt: skip
            if answer.status_code != 200:
                self.failures.append(f"{sent.path} → {answer.status_code} {answer.text[:200]}")
                return
            self.acknowledged += attempt == 0


# -- the deliveries, one builder per kind --------------------------------------------------------


def zendesk_ticket(ticket_id: int, index: int, fixture: str = "ticket_created.json") -> Sent:
    """A signed ticket.created of customer `index` (the fake knows the requester)."""
    body = zendesk_event(
        fixture, event_id=str(uuid.uuid4()), id=str(ticket_id), requester_id=str(FIRST_USER + index)
    )
    return Sent("/hooks/zendesk", body, zendesk_headers(body))


def twilio_call(index: int, call_sid: str, fixture: str) -> Sent:
    """A signed Twilio status callback of a call from customer `index`."""
    fields = twilio_fields(fixture, CallSid=call_sid, From=phone_of(index))
    signature = twilio_sign(TWILIO_TOKEN, PUBLIC_URL + "/hooks/twilio", fields)
    headers = {"X-Twilio-Signature": signature,
               "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    return Sent("/hooks/twilio", urlencode(fields).encode(), headers)


def twilio_sms(index: int) -> Sent:
    """A signed incoming SMS from customer `index`."""
    sid = f"SM{uuid.uuid4().hex}"
    fields = twilio_fields("message_received.form", MessageSid=sid, SmsSid=sid,
                           From=phone_of(index))  # fmt: skip
    signature = twilio_sign(TWILIO_TOKEN, PUBLIC_URL + "/hooks/twilio", fields)
    headers = {"X-Twilio-Signature": signature,
               "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    return Sent("/hooks/twilio", urlencode(fields).encode(), headers)


def cti_event(event: str, index: int, call_id: str) -> Sent:
    """A signed CTI event of a call from customer `index`."""
    fixture = "newCall.json" if event == "newCall" else "hangup.json"
    body = cti_body(fixture, callId=call_id, **{"from": phone_of(index).lstrip("+")})
    return Sent("/hooks/cti", body, cti_headers(body))


def shopify_order(index: int) -> Sent:
    """A signed Shopify orders/create of customer `index`."""
    body = json.loads(shopify_body("orders_create.json"))
    body["id"] = 5_000_000 + index
    body["name"] = f"#{2000 + index}"
    body["email"] = email_of(index)
    raw = json.dumps(body).encode()
    return Sent("/hooks/shopify", raw, shopify_headers(raw, "orders/create"))


def survey(index: int) -> Sent:
    """A signed survey answer of customer `index` through the generic inbound."""
    body = generic_body("survey_answered.json", email=email_of(index))
    return Sent("/hooks/generic", body, generic_headers(body))


def salesforce_case(fake: FakeSalesforce, contact_id: str, subject: str) -> Sent:
    """An Outbound Message of a new case of a contact, as the fake org builds it."""
    case_id = fake.add_case(subject, contact_id)
    return Sent("/hooks/salesforce", fake.outbound_message([("Case", fake.case_fields(case_id))]),
                SOAP_HEADERS)  # fmt: skip


# -- the topology ----------------------------------------------------------------------------------


@pytest.fixture
def store_url(postgres_url: str) -> str:
    """Return the test PostgreSQL schema, emptied."""
    empty_tables(postgres_url)
    return postgres_url


@pytest.fixture
def fakes() -> Iterator[tuple[FakeZendesk, FakeSalesforce]]:
    """Run a fake Zendesk and a fake Salesforce that know the customers."""
    with (
        FakeZendesk(email=ZENDESK_EMAIL, api_token=ZENDESK_TOKEN) as zendesk,
        FakeSalesforce(session_id=SF_SESSION, org_id=SF_ORG) as salesforce,
    ):
        for index in range(CUSTOMERS):
            zendesk.add_user(FIRST_USER + index, f"Customer {index}", email=email_of(index),
                             phone=phone_of(index))  # fmt: skip
            zendesk.add_ticket(FIRST_EARLIER_TICKET + index, FIRST_USER + index, "earlier")
            zendesk.add_ticket(FIRST_NEW_TICKET + index, FIRST_USER + index, "new")
        yield zendesk, salesforce


def write_config(path: Path, store_url: str, zendesk: FakeZendesk, salesforce: FakeSalesforce,
                 worker: bool) -> Path:  # fmt: skip
    """Write one process's config.yaml: the shared store, every integration, worker or not."""
    raw: dict[str, Any] = raw_config(
        store_url,
        zendesk.url,
        phone=True,
        generic=True,
        shopify={},
        salesforce={"instance_url": salesforce.url, "organization_id": SF_ORG},
        worker={"enabled": worker, "lease_s": LEASE_S, "backoff_base_s": 0.0},
        pop={"poll_s": 60.0},  # only a notification can bring a change within POP_WAIT_S
    )
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@dataclass
class Topology:
    """The running processes: gunicorn's web processes and two workers."""

    web: Server
    workers: list[Server]

    @property
    def url(self) -> str:
        """Return the web processes' base URL."""
        return f"http://{HOST}:{self.web.port}"


@pytest.fixture
def topology(
    store_url: str, fakes: tuple[FakeZendesk, FakeSalesforce], tmp_path: Path
) -> Iterator[Topology]:
    """Start two web processes and two workers on the store; stop them all afterwards."""
    zendesk, salesforce = fakes
    processes = Processes(tmp_path)
    web_config = write_config(tmp_path / "web.yaml", store_url, zendesk, salesforce, False)
    worker_config = write_config(tmp_path / "worker.yaml", store_url, zendesk, salesforce, True)
    try:
        port = free_port()
        web = processes.start("web", "serve", "--config", str(web_config), "--host", HOST,
                              "--port", str(port), "--processes", "2", port=port)  # fmt: skip
        workers = [processes.start(name, "worker", "--config", str(worker_config))
                   for name in ("worker-1", "worker-2")]  # fmt: skip
        web.wait_ready(timeout=60)
        for worker in workers:
            worker.wait_output("started")
        yield Topology(web, workers)
    finally:
        processes.close()


def open_pop(url: str, phone: str) -> EventStream:
    """Open a pop in the web process at url, as a softphone does; return its event stream."""
    page = requests.get(f"{url}/pop?phone={quote(phone, safe='')}",
                        headers={"Authorization": f"Bearer {AGENT_KEY}"}, timeout=30)  # fmt: skip
    assert page.status_code == 200, page.text[:300]
    found = re.search(r'data-events="([^"]*)"', page.text)
    assert found, "the pop page names no event stream"
    port = int(url.rsplit(":", 1)[1])
    stream = EventStream(port, html.unescape(found.group(1)))
    name, data = stream.next_event()  # the current state, sent at once
    assert name == "pop" and "ringing" not in data
    return stream


def test_a_pop_in_a_web_process_shows_a_call_processed_by_a_worker_in_another(
    topology: Topology,
) -> None:
    """Stored by a web process, processed by a worker process, shown by an open pop."""
    stream = open_pop(topology.url, phone_of(0))
    try:
        Senders(topology.url).post(cti_event("newCall", 0, str(uuid.uuid4())))
        shown = None
        for _ in range(20):  # the next few events: the stream says nothing else meanwhile
            name, data = stream.next_event()
            if name == "pop" and "ringing" in data:
                shown = data
                break
        assert shown is not None, "the pop never showed the call ringing"
    finally:
        stream.close()


def test_every_kind_of_webhook_through_a_worker_killed_midway_is_done_once(
    topology: Topology,
    fakes: tuple[FakeZendesk, FakeSalesforce],
    store_url: str,
) -> None:
    """Each acknowledged delivery stored once and done; each note upstream exactly once."""
    zendesk, salesforce = fakes
    contact = salesforce.add_contact("Casey", "Contact", email=email_of(0), phone=phone_of(0))
    senders = Senders(topology.url)
    for index in range(CUSTOMERS):  # the history first: each later contact is due a note
        senders.post(zendesk_ticket(FIRST_EARLIER_TICKET + index, index))
    senders.post(salesforce_case(salesforce, contact, "earlier case"))
    store = Store(store_url)
    try:
        assert wait_until(lambda: store.statuses()[0] == {"done": senders.acknowledged},
                          DRAIN_WAIT_S), store.statuses()  # fmt: skip
        zendesk.delay_seconds = salesforce.delay_seconds = UPSTREAM_DELAY_S
        burst = list(every_kind(salesforce, contact))
        victim = topology.workers[0].process
        for number, sent in enumerate(burst):
            senders.post(sent, again=number % 7 == 0)
            if number == len(burst) // 3:
                assert wait_until(lambda: bool(store.held_by(victim.pid)), DRAIN_WAIT_S)
                victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert senders.failures == []
        zendesk.delay_seconds = salesforce.delay_seconds = 0

        def settled() -> bool:
            done_in, done_out = store.statuses()
            return set(done_in) == {"done"} and set(done_out) <= {"done"}

        assert wait_until(settled, DRAIN_WAIT_S), store.statuses()
        check_done_once(store, senders.acknowledged, zendesk, salesforce)
    finally:
        store.dispose()


def every_kind(salesforce: FakeSalesforce, contact: str) -> Iterator[Sent]:
    """Yield the burst: new tickets and cases, calls, SMS, PBX calls, orders, surveys."""
    for index in range(CUSTOMERS):
        yield zendesk_ticket(FIRST_NEW_TICKET + index, index)
        call_sid = f"CA{uuid.uuid4().hex}"
        yield twilio_call(index, call_sid, "call_started__ringing.form")
        yield twilio_call(index, call_sid, "call_ended__completed.form")
        yield twilio_sms(index)
        call_id = str(uuid.uuid4())
        yield cti_event("newCall", index, call_id)
        yield cti_event("hangup", index, call_id)
        yield shopify_order(index)
        yield survey(index)
        if index % 4 == 0:
            yield salesforce_case(salesforce, contact, f"new case {index}")


def check_done_once(
    store: Store, acknowledged: int, zendesk: FakeZendesk, salesforce: FakeSalesforce
) -> None:
    """Every acknowledged delivery stored once; each written note upstream exactly once."""
    with store.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(deliveries)).scalar_one()
        written = {
            (row.target, row.target_ref, row.marker)
            for row in conn.execute(select(writes.c.target, writes.c.target_ref, writes.c.marker))
        }
        calls = list(
            conn.execute(
                select(interactions.c.source, interactions.c.external_id, func.count())
                .group_by(interactions.c.source, interactions.c.external_id)
                .having(func.count() > 1)
            )
        )
    assert stored == acknowledged
    assert calls == [], "an interaction was recorded twice"
    upstream: Counter[tuple[str, str, str]] = Counter()
    for target, ref in {(t, r) for t, r, _ in written}:  # each ticket and case once
        if target == "zendesk":
            texts = [note["body"] or "" for note in zendesk.notes(int(ref))]
        else:
            texts = [c.get("CommentBody") or "" for c in salesforce.comments(ref)]
        for text in texts:
            upstream.update((target, ref, m) for m in MARKER_PATTERN.findall(text))
    assert written, "no note was due: the scenario tests nothing"
    assert {t for t, _, _ in written} == {"zendesk", "salesforce"}
    assert set(upstream) == written, "a note is missing upstream, or one is not in the store"
    assert max(upstream.values()) == 1, "a note was written twice"
