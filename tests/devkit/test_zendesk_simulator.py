"""The Zendesk simulator's webhooks, checked against a real Carryover, and its agent view."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from sqlalchemy import select

from devkit.simulators.zendesk import (
    BOT_USER_ID,
    FakeZendesk,
    FaultControl,
    Traffic,
    WebhookFailed,
)
from middleware.errors import PermanentUpstreamError, RateLimited, UpstreamError
from middleware.installation import Installation
from middleware.process.worker import Worker
from middleware.store.tables import interactions, writes
from plugins.zendesk import sign
from plugins.zendesk.client import ZendeskClient
from tests.payloads import fixture_bytes
from tests.values import ANN, ZENDESK_EMAIL, ZENDESK_SECRET, ZENDESK_TOKEN

EVENT_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
MONDAY = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
ECHOED_NOTES = 40


@pytest.fixture
def zendesk(fake_zendesk: FakeZendesk, carryover_url: str) -> FakeZendesk:
    """Return the fake Zendesk with its webhook pointed at the served Carryover."""
    fake_zendesk.subscribe(f"{carryover_url}/hooks/zendesk", ZENDESK_SECRET)
    return fake_zendesk


class ConnectionCountingTarget(http.server.ThreadingHTTPServer):
    """A keep-alive webhook target that answers 200 and counts the connections left open."""

    daemon_threads = True
    open_connections = 0

    def __init__(self) -> None:
        self.counting = threading.Lock()
        super().__init__(("127.0.0.1", 0), CountingHandler)
        self.url = f"http://127.0.0.1:{self.server_port}/hooks/zendesk"

    def count(self, change: int) -> None:
        """Add change to the number of open connections."""
        with self.counting:
            self.open_connections += change


class CountingHandler(http.server.BaseHTTPRequestHandler):
    """Answer every POST 200 on a connection kept open until the client closes it."""

    protocol_version = "HTTP/1.1"
    server: ConnectionCountingTarget

    def setup(self) -> None:
        """Count the connection as open."""
        super().setup()
        self.server.count(+1)

    def finish(self) -> None:
        """Count the connection as closed."""
        super().finish()
        self.server.count(-1)

    def do_POST(self) -> None:
        """Read the event and answer 200 with a small JSON body."""
        self.rfile.read(int(self.headers["Content-Length"]))
        answer = b'{"received":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("X-Carryover-Ignored", "own note")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


@pytest.fixture
def counting_target() -> Iterator[ConnectionCountingTarget]:
    """Serve a webhook target that counts open connections; stop it afterwards."""
    target = ConnectionCountingTarget()
    thread = threading.Thread(target=target.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    yield target
    target.shutdown()
    thread.join(timeout=5)
    target.server_close()


def sent(fake: FakeZendesk, index: int = -1) -> dict[str, Any]:
    """Return the payload of one event the fake sent."""
    return json.loads(fake.deliveries[index].body)  # type: ignore[no-any-return]


def ticket_row(core: Installation, ticket_id: int) -> Any:
    """Return the interaction Carryover stored for a ticket."""
    query = select(interactions).where(
        interactions.c.kind == "ticket", interactions.c.external_id == str(ticket_id)
    )
    with core.engine.connect() as conn:
        return conn.execute(query).one()


# -- events as Zendesk sends them ------------------------------------------------------------


def test_open_ticket_sends_ticket_created_shaped_like_the_fixture(
    zendesk: FakeZendesk, worker: Worker, core: Installation
) -> None:
    """open_ticket sends a signed ticket.created with the fixture's fields that Carryover stores."""
    text = "Hi,\ncharged twice for my café order ☕."
    ticket_id = zendesk.open_ticket(ANN, "Charged twice", text, channel="email")
    fixture = json.loads(fixture_bytes("ticket_created__mail.json"))
    payload = sent(zendesk)
    assert payload.keys() == fixture.keys()
    assert payload["detail"].keys() == fixture["detail"].keys()
    assert payload["type"] == "zen:event-type:ticket.created"
    assert payload["subject"] == f"zen:ticket:{ticket_id}"
    assert payload["event"] == {}
    assert EVENT_TIME.match(payload["time"])
    detail = payload["detail"]
    assert (detail["id"], detail["requester_id"]) == (str(ticket_id), str(ANN))
    assert (detail["status"], detail["via"]) == ("NEW", {"channel": "mail"})
    assert all(detail[key] is None or isinstance(detail[key], str) for key in detail if "id" in key)
    assert detail["description"] == text and "café".encode() in zendesk.deliveries[-1].body
    delivery = zendesk.deliveries[-1]
    timestamp = delivery.headers["X-Zendesk-Webhook-Signature-Timestamp"]
    assert delivery.headers["X-Zendesk-Webhook-Signature"] == sign(
        ZENDESK_SECRET, timestamp, delivery.body
    )
    assert delivery.response is not None and delivery.response.status_code == 200
    assert "X-Carryover-Ignored" not in delivery.response.headers
    worker.drain()
    row = ticket_row(core, ticket_id)
    assert (row.channel, row.status, row.subject) == ("email", "new", "Charged twice")
    assert row.text == text


@pytest.mark.parametrize(
    ("channel", "via_type", "stored"),
    [
        ("web", "web_form", "web"),
        ("facebook", "facebook_message", "facebook"),
        ("chat", "chat", "chat"),
        ("voice", "phone_call_inbound", "phone"),
    ],
)
def test_channel_is_sent_as_its_via_type(
    zendesk: FakeZendesk,
    worker: Worker,
    core: Installation,
    channel: str,
    via_type: str,
    stored: str,
) -> None:
    """A REST channel name goes out as the via type real events use and maps back in Carryover."""
    ticket_id = zendesk.open_ticket(ANN, "Hello", "Hello there", channel=channel)
    assert sent(zendesk)["detail"]["via"] == {"channel": via_type}
    assert zendesk.tickets[ticket_id]["via"]["channel"] == channel
    worker.drain()
    assert ticket_row(core, ticket_id).channel == stored


def test_unknown_channel_or_status_is_refused_before_anything_changes(
    fake_zendesk: FakeZendesk,
) -> None:
    """A channel or status Zendesk does not have raises ValueError and creates nothing."""
    fake_zendesk.subscribe("http://127.0.0.1:9/hooks/zendesk", ZENDESK_SECRET)
    before = dict(fake_zendesk.tickets)
    with pytest.raises(ValueError, match="not a channel"):
        fake_zendesk.open_ticket(ANN, "Hello", "Hello there", channel="carrier pigeon")
    with pytest.raises(ValueError, match="not a ticket status"):
        fake_zendesk.open_ticket(ANN, "Hello", "Hello there", status="urgent")
    assert fake_zendesk.tickets == before and fake_zendesk.deliveries == []


def test_at_backdates_the_event_but_not_its_signature(
    zendesk: FakeZendesk, worker: Worker, core: Installation
) -> None:
    """A ticket opened "on Monday" carries Monday's times and still passes the freshness check."""
    ticket_id = zendesk.open_ticket(ANN, "Router drops", "Every evening.", at=MONDAY)
    payload = sent(zendesk)
    assert payload["time"] == "2025-01-06T09:00:00.000000000Z"
    assert payload["detail"]["created_at"] == "2025-01-06T09:00:00Z"
    delivery = zendesk.deliveries[-1]
    assert delivery.headers["X-Zendesk-Webhook-Signature-Timestamp"] != "2025-01-06T09:00:00Z"
    assert delivery.response is not None and delivery.response.status_code == 200
    worker.drain()
    assert ticket_row(core, ticket_id).occurred_at == MONDAY.replace(tzinfo=None)


def test_comments_and_status_changes_reach_carryover(
    zendesk: FakeZendesk, worker: Worker, core: Installation
) -> None:
    """A customer comment is stored, an agent comment ignored, and a new status applied."""
    agent = zendesk.add_user(8447388090494, "Sam Agent", email="sam@example.com")
    agent["role"] = "agent"
    ticket_id = zendesk.open_ticket(ANN, "Refund", "Where is my refund?")
    customer_comment = zendesk.add_comment(ticket_id, "Any news?")
    payload = sent(zendesk)
    assert payload["type"] == "zen:event-type:ticket.comment_added"
    assert payload["event"]["comment"] == {
        "author": {"id": str(ANN), "is_staff": False, "name": "Ann Example"},
        "body": "Any news?",
        "html_body": '<div class="zd-comment" dir="auto">Any news?</div>',
        "id": str(customer_comment),
        "is_public": True,
    }
    zendesk.add_comment(ticket_id, "Looking into it.", author_id=agent["id"])
    agent_reply = zendesk.deliveries[-1].response
    assert agent_reply is not None
    assert agent_reply.headers["X-Carryover-Ignored"] == "ticket.comment_added.by_agent"
    zendesk.set_status(ticket_id, "solved")
    assert sent(zendesk)["event"] == {"current": "SOLVED", "previous": "NEW"}
    assert sent(zendesk)["detail"]["status"] == "SOLVED"
    zendesk.set_status(ticket_id, "SOLVED")  # unchanged: Zendesk sends nothing
    assert len(zendesk.deliveries) == 4
    assert len({sent(zendesk, i)["id"] for i in range(4)}) == 4
    worker.drain()
    assert ticket_row(core, ticket_id).status == "solved"
    with core.engine.connect() as conn:
        query = select(interactions.c.text).where(interactions.c.kind == "message")
        assert conn.execute(query).scalars().all() == ["Any news?"]


def test_refused_event_raises_and_keeps_the_ticket(
    fake_zendesk: FakeZendesk, carryover_url: str
) -> None:
    """An event Carryover refuses (wrong secret: 401) raises WebhookFailed; the ticket stays."""
    fake_zendesk.subscribe(f"{carryover_url}/hooks/zendesk", "not-the-secret")
    with pytest.raises(WebhookFailed, match="answered 401"):
        fake_zendesk.open_ticket(ANN, "Hello", "Hello there")
    assert max(fake_zendesk.tickets) == 5161


def test_events_need_a_webhook_target() -> None:
    """Without subscribe(), the event methods raise WebhookFailed naming the fix."""
    with FakeZendesk() as fake, pytest.raises(WebhookFailed, match="subscribe"):
        fake.open_ticket(BOT_USER_ID, "Hello", "Hello there")


# -- Carryover's own notes coming back -------------------------------------------------------


def test_written_note_is_echoed_after_the_put_and_carryover_ignores_it(
    zendesk: FakeZendesk, worker: Worker, core: Installation
) -> None:
    """Carryover's private note comes back as ticket.comment_added and is answered 200, ignored."""
    zendesk.open_ticket(ANN, "Charged twice", "Charged twice for January.", channel="email")
    worker.drain()
    second = zendesk.open_ticket(ANN, "Still no refund", "Nothing yet.", channel="facebook")
    worker.drain()
    [note] = zendesk.notes(second)
    zendesk.wait_for_echoes(timeout=5)
    echo = zendesk.deliveries[-1]
    comment = json.loads(echo.body)["event"]["comment"]
    assert echo.event_type == "ticket.comment_added"
    assert (comment["body"], comment["is_public"]) == (note["body"], False)
    assert comment["html_body"] == note["html_body"]  # written as rich text, kept as such
    assert note["html_body"].startswith("<p>") and "[Carryover ref co-" in note["body"]
    assert comment["author"] == {"id": str(BOT_USER_ID), "is_staff": True, "name": "Carryover Bot"}
    assert echo.response is not None and echo.response.status_code == 200
    assert echo.response.headers["X-Carryover-Ignored"] == "own note"
    assert worker.drain() == 0
    with core.engine.connect() as conn:
        assert len(conn.execute(select(writes)).all()) == 1


def test_echoed_notes_leave_no_connection_open_at_the_target(
    fake_zendesk: FakeZendesk, counting_target: ConnectionCountingTarget
) -> None:
    """Each echo's connection closes once answered: 40 echoed notes leave none open."""
    fake_zendesk.subscribe(counting_target.url, ZENDESK_SECRET)
    client = ZendeskClient(fake_zendesk.url, ZENDESK_EMAIL, ZENDESK_TOKEN, timeout=5)
    for number in range(ECHOED_NOTES):
        client.add_private_note(5141, f"Seen before: note {number}")
    fake_zendesk.wait_for_echoes(timeout=10)
    deadline = time.monotonic() + 2  # the target's threads see each close a moment later
    while counting_target.open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert counting_target.open_connections == 0
    answers = [delivery.response for delivery in fake_zendesk.deliveries]
    assert len(answers) == ECHOED_NOTES
    for answer in answers:  # what tests read of an answer stays: status, headers, body
        assert answer is not None and answer.status_code == 200
        assert answer.headers["x-carryover-ignored"] == "own note"
        assert answer.text == '{"received":true}'


# -- the agent view --------------------------------------------------------------------------


def test_agent_view_shows_a_written_private_note_and_escapes_markup(
    fake_zendesk: FakeZendesk,
) -> None:
    """GET / lists tickets newest first with the private note marked internal, all escaped."""
    fake_zendesk.add_ticket(7001, ANN, "<script>alert('x')</script> & more", channel="email")
    fake_zendesk.add_ticket(9000, ANN, "Opened on Monday", at=MONDAY)
    client = ZendeskClient(fake_zendesk.url, ZENDESK_EMAIL, ZENDESK_TOKEN, timeout=5)
    client.add_private_note(7001, "Seen before:\n<b>ticket 5141</b> by email")
    logged = len(fake_zendesk.requests_log)
    for path in ("/", "/agent"):
        page = requests.get(fake_zendesk.url + path, timeout=5)
        assert page.status_code == 200
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert '<meta http-equiv="refresh" content="2">' in page.text
        assert "<script>" not in page.text and "<b>" not in page.text
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page.text
        newest = page.text.index("#7001")
        assert newest < page.text.index("#5160") < page.text.index("#5141")
        assert page.text.index("#5141") < page.text.index("#9000")
        assert (
            '<article class="internal"><p class="meta">Carryover Bot · internal note'
            in page.text[newest:]
        )
        assert "<pre>Seen before:\n&lt;b&gt;ticket 5141&lt;/b&gt; by email</pre>" in page.text
        assert "Ann Example · email · open" in page.text
    assert len(fake_zendesk.requests_log) == logged


# -- fault modes -----------------------------------------------------------------------------


def api_get(fake: FakeZendesk, path: str, timeout: float = 5) -> requests.Response:
    """GET an API path of the fake as Carryover's agent."""
    auth = (f"{ZENDESK_EMAIL}/token", ZENDESK_TOKEN)
    return requests.get(f"{fake.url}/api/v2/{path}", auth=auth, timeout=timeout)


def test_rate_limit_answers_429_with_retry_after_for_its_window(fake_zendesk: FakeZendesk) -> None:
    """Every API request of the window gets 429 + Retry-After, is counted, and then it ends."""
    started = time.time()
    fake_zendesk.rate_limit(seconds=0.5, retry_after=7)
    refused = [api_get(fake_zendesk, "users/me.json") for _ in range(3)]
    client = ZendeskClient(fake_zendesk.url, ZENDESK_EMAIL, ZENDESK_TOKEN, timeout=5)
    with pytest.raises(RateLimited) as raised:
        client.add_private_note(5141, "not now")
    assert [r.status_code for r in refused] == [429] * 3
    assert refused[0].headers["Retry-After"] == "7" and raised.value.retry_after == 7
    assert fake_zendesk.notes(5141) == []
    assert fake_zendesk.faults()["rate_limit"]["value"] == 7
    time.sleep(0.6)
    assert api_get(fake_zendesk, "users/me.json").status_code == 200
    assert fake_zendesk.faults() == {}
    assert fake_zendesk.traffic(since=started) == Traffic(
        api=5, puts=1, rate_limited=4, unavailable=0
    )
    assert fake_zendesk.traffic(since=time.time()).api == 0


def test_unavailable_answers_503_and_keeps_fail_next_for_later(fake_zendesk: FakeZendesk) -> None:
    """A 503 window refuses everything; a failure queued with fail_next waits until it ends."""
    fake_zendesk.fail_next(500)
    fake_zendesk.unavailable(seconds=0.4)
    down = api_get(fake_zendesk, "tickets/5141.json")
    client = ZendeskClient(fake_zendesk.url, ZENDESK_EMAIL, ZENDESK_TOKEN, timeout=5)
    with pytest.raises(UpstreamError, match="503") as raised:
        client.add_private_note(5141, "not now")
    assert not isinstance(raised.value, PermanentUpstreamError)
    assert down.status_code == 503 and down.json()["error"] == "ServiceUnavailable"
    time.sleep(0.5)
    assert api_get(fake_zendesk, "tickets/5141.json").status_code == 500
    assert api_get(fake_zendesk, "tickets/5141.json").status_code == 200
    assert fake_zendesk.traffic().unavailable == 2


def test_stall_holds_each_request_and_handles_it_after_the_client_gave_up(
    fake_zendesk: FakeZendesk,
) -> None:
    """A stalled PUT times the client out and is applied when its hold ends."""
    fake_zendesk.stall(seconds=0.3, hold=1.5)
    client = ZendeskClient(fake_zendesk.url, ZENDESK_EMAIL, ZENDESK_TOKEN, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="did not answer in time"):
        client.add_private_note(5141, "held")
    assert time.monotonic() - started < 1.2
    assert fake_zendesk.notes(5141) == []
    deadline = time.monotonic() + 5
    while not fake_zendesk.notes(5141) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [n["body"] for n in fake_zendesk.notes(5141)] == ["held"]
    assert time.monotonic() - started >= 1.45
    time.sleep(0.1)
    quick = time.monotonic()
    assert api_get(fake_zendesk, "tickets/5141.json").status_code == 200
    assert time.monotonic() - quick < 0.3


def test_apply_late_writes_the_note_after_the_timeout_and_answers_reads_at_once(
    fake_zendesk: FakeZendesk,
) -> None:
    """A late write times the client out, yet the note appears `delay` after the PUT came."""
    fake_zendesk.apply_late(delay=1.2)
    client = ZendeskClient(fake_zendesk.url, ZENDESK_EMAIL, ZENDESK_TOKEN, timeout=0.3)
    with pytest.raises(UpstreamError, match="did not answer in time"):
        client.add_private_note(5149, "late [Carryover ref co-1-summary]")
    assert not client.has_comment_containing(5149, "co-1-summary")  # a read is not held
    time.sleep(1.0)
    assert client.has_comment_containing(5149, "co-1-summary")
    assert len(fake_zendesk.notes(5149)) == 1
    assert fake_zendesk.faults() == {"apply_late": {"remaining_s": None, "value": 1.2}}
    fake_zendesk.clear_faults()
    client.add_private_note(5149, "on time")
    assert len(fake_zendesk.notes(5149)) == 2


def test_fault_modes_are_switched_and_counted_over_http(fake_zendesk: FakeZendesk) -> None:
    """FaultControl drives POST/GET/DELETE /_control/faults and reads /_control/traffic."""
    remote = FaultControl(fake_zendesk.url)
    started = time.time()
    remote.rate_limit(seconds=30, retry_after=2)
    remote.stall(seconds=30, hold=0.05)
    assert set(remote.faults()) == {"rate_limit", "stall"}
    assert remote.faults()["rate_limit"]["value"] == 2
    assert api_get(fake_zendesk, "users/me.json").status_code == 429
    remote.clear_faults()
    assert remote.faults() == {}
    assert api_get(fake_zendesk, "users/me.json").status_code == 200
    remote.unavailable(seconds=30)
    assert api_get(fake_zendesk, "users/me.json").status_code == 503
    remote.clear_faults()
    remote.apply_late(delay=0.1, seconds=30)
    assert remote.faults()["apply_late"]["value"] == 0.1
    assert remote.traffic(since=started) == Traffic(api=3, puts=0, rate_limited=1, unavailable=1)
    assert remote.traffic(since=started, until=started).api == 0
    assert len(fake_zendesk.requests_log) == 3  # the switch itself is not API traffic


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"mode": "flood"}, "mode one of rate_limit, unavailable, stall, apply_late"),
        ({"mode": "stall", "seconds": 5}, "stall: expected seconds, hold; got seconds"),
        ({"mode": "unavailable", "seconds": 5, "hold": 1}, "got hold, seconds"),
        ({"mode": "unavailable", "seconds": -1}, "seconds must be a finite number ≥ 0"),
        ({"mode": "rate_limit", "seconds": "5", "retry_after": 1}, "seconds must be a number"),
    ],
)
def test_a_bad_fault_switch_is_refused_with_400(
    fake_zendesk: FakeZendesk, given: dict, error: str
) -> None:
    """A switch that names no mode, misses a parameter or gives a bad value changes nothing."""
    response = requests.post(f"{fake_zendesk.url}/_control/faults", json=given, timeout=5)
    assert response.status_code == 400 and error in response.json()["error"]
    assert fake_zendesk.faults() == {}
    with pytest.raises(ValueError, match="must be a number"):
        FaultControl(fake_zendesk.url).stall(seconds=1, hold=True)
