"""Calls end to end: the screen-pop, its live updates, transfers, and notes on open tickets."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from html import unescape
from types import SimpleNamespace
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from middleware.notes.outbox import MARKER_PATTERN
from middleware.process.calls import call_facts
from middleware.reads.context_api import signed_path
from middleware.store.tables import interactions, writes
from tests.payloads import cti_body, fixture_bytes, twilio_fields
from tests.values import AGENT_KEY, ANN

BEARER = {"Authorization": f"Bearer {AGENT_KEY}"}
ANN_PHONE = "+14155550142"


def zulu(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ticket(name: str, ticket_id: str, age: timedelta = timedelta(0), **detail) -> bytes:
    """A Zendesk ticket event of Ann's, happening `age` ago, with a fresh event id."""
    payload = json.loads(fixture_bytes(name))
    moment = datetime.now(UTC) - age
    payload["id"] = str(uuid.uuid4())
    payload["time"] = zulu(moment)
    payload["detail"].update(id=ticket_id, created_at=zulu(moment), updated_at=zulu(moment),
                             **detail)  # fmt: skip
    return json.dumps(payload).encode()


@pytest.fixture
def ann(client, worker, fake_zendesk, hooks):
    """Ann wrote an email (ticket 5141) and a Facebook message (ticket 5149) this week."""
    hooks.zendesk(ticket("ticket_created__mail.json", "5141", timedelta(days=2)))
    hooks.zendesk(ticket("ticket_created__facebook_message.json", "5149", timedelta(1)))
    worker.drain()


def pop_html(client, phone: str = ANN_PHONE, **headers) -> str:
    response = client.get(f"/pop?phone={quote(phone)}", headers=headers or BEARER)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def call_notes(fake_zendesk, ticket_id: int) -> list[dict]:
    """Return the call notes on a ticket (5149 also has the summary note of its creation)."""
    return [n for n in fake_zendesk.notes(ticket_id) if n["body"].startswith("Phone call")]


def call_rows(core, kind: str = "call"):
    with core.engine.connect() as conn:
        return conn.execute(select(interactions).where(interactions.c.kind == kind)).all()


# -- the pop -------------------------------------------------------------------------------


def test_ringing_call_pops_the_callers_tickets_from_every_channel(client, worker, ann, hooks):
    """After Ann's tickets, a Twilio ringing from her number: the pop shows them and the call."""
    hooks.twilio(twilio_fields("call_started__ringing.form"))
    worker.drain()
    html = pop_html(client)
    assert "Ann Example" in html
    assert "#5141</a>" in html and "Charged twice for my January invoice" in html
    assert "#5149</a>" in html and "facebook" in html
    assert "This call" in html and "ringing" in html
    assert "Still no refund for the double charge" in html  # what she already said
    assert "negative" in html  # mood


def test_the_pop_reads_like_the_notes(client, core, worker, ann, hooks, fake_zendesk):
    """Records named and linked as agents know them, times in the installation's zone,
    the customer's own words before the open items, no raw ids and no filler."""
    hooks.twilio(twilio_fields("call_started__ringing.form"))
    worker.drain()
    html = pop_html(client)
    tickets = f"{fake_zendesk.url}/agent/tickets"
    assert f'<a href="{tickets}/5141" target="_blank" rel="noopener">#5141</a>' in html
    assert f'<a href="{tickets}/5149" target="_blank" rel="noopener">#5149</a>' in html
    for raw in ("CA5d8e2b7f4a9c41e08f3b6d2a7c9e1f40", str(ANN), "zendesk_user", "zendesk ticket"):
        assert raw not in html
    assert "unknown" not in html and "none" not in html
    assert not re.search(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", html)  # no ISO stamps
    assert html.index("Already said") < html.index("Open items")
    assert "Recognised by email, phone and facebook" in html
    since = re.compile(r"since \w{3} \d{1,2} \w{3} (\d{2}):(\d{2})")
    utc = since.search(html)
    core.renderer.env.zone = ZoneInfo("Asia/Kolkata")  # UTC+05:30, no summer time
    kolkata = since.search(pop_html(client))
    assert utc and kolkata
    minutes = [int(m.group(1)) * 60 + int(m.group(2)) for m in (utc, kolkata)]
    assert (minutes[1] - minutes[0]) % (24 * 60) == 5 * 60 + 30


def test_pop_of_a_number_written_without_plus_or_nationally(client, ann):
    """The pop reads numbers as softphones pass them: 14155550142, (415) 555-0142."""
    for written in ("14155550142", "(415) 555-0142", "+1 415 555 0142"):
        assert "Ann Example" in pop_html(client, written)


def test_unknown_caller_gets_a_clear_no_history_pop(client, ann):
    """A number nobody holds: 200 'No history', and nothing of Ann's."""
    html = pop_html(client, "+14155550177")
    assert "No history" in html
    assert "Ann Example" not in html and "5141" not in html


def test_withheld_number_pop_says_so(client, ann):
    """anonymous / restricted: a pop that says the number is withheld, nobody's data."""
    for value in ("anonymous", "restricted", "+266696687"):
        html = pop_html(client, value)
        assert "withheld" in html
        assert "Ann Example" not in html


def test_pop_of_text_that_cannot_be_a_number_is_400(client, ann):
    """Garbage in the phone parameter: 400 with the reason."""
    response = client.get("/pop?phone=not-a-number", headers=BEARER)
    assert response.status_code == 400
    assert "cannot be a valid phone number" in response.get_data(as_text=True)
    assert client.get("/pop", headers=BEARER).status_code == 400


def test_pop_needs_a_key_or_a_signed_link(client, core, ann):
    """No key: 401 with nothing revealed; a signed link opens it; a tampered one does not."""
    response = client.get(f"/pop?phone={quote(ANN_PHONE)}")
    assert response.status_code == 401
    assert "Ann" not in response.get_data(as_text=True)
    link = signed_path(core.link_secret, "/pop", {"phone": ANN_PHONE}, 60)
    assert "Ann Example" in client.get(link).get_data(as_text=True)
    assert client.get(link.replace("4155550142", "4155550143")).status_code == 401
    expired = signed_path(core.link_secret, "/pop", {"phone": ANN_PHONE}, -1)
    assert client.get(expired).status_code == 401


def test_shared_line_pop_shows_candidates_not_anyones_history(client, worker, fake_zendesk, hooks):
    """Two people with their own emails on one number: the pop lists both, shows neither's."""
    fake_zendesk.add_user(501, "Bea Family", email="bea@example.com", phone="+14155550160")
    fake_zendesk.add_user(502, "Cal Family", email="cal@example.com", phone="+14155550160")
    hooks.zendesk(ticket("ticket_created__mail.json", "7001", requester_id="501",
                                subject="Bea's router"))  # fmt: skip
    hooks.zendesk(ticket("ticket_created__mail.json", "7002", requester_id="502",
                                subject="Cal's invoice"))  # fmt: skip
    worker.drain()
    hooks.twilio(twilio_fields("call_started__ringing.form", From="+14155550160"))
    worker.drain()
    html = pop_html(client, "+14155550160")
    assert "shared line" in html
    assert "Bea Family" in html and "Cal Family" in html
    assert "router" not in html and "invoice" not in html
    [call] = call_rows(worker.core)
    assert call.customer_id is None


# -- live updates ------------------------------------------------------------------------------


def events_url(client) -> str:
    """Return the signed stream link the pop page carries for its script."""
    match = re.search(r'data-events="([^"]+)"', pop_html(client))
    assert match, "the pop carries no events link"
    return unescape(match.group(1))


def next_event(stream) -> str:
    """Read the next 'pop' event's data from a server-sent events stream."""
    buffer = ""
    for chunk in stream:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        if "event: pop\n" in buffer and buffer.endswith("\n\n"):
            block = buffer[buffer.index("event: pop\n") :]
            return "\n".join(line[6:] for line in block.splitlines() if line.startswith("data: "))
    raise AssertionError("the stream ended without a pop event")


def test_live_update_reaches_an_open_pop_as_the_call_is_answered(client, worker, ann, hooks):
    """An open pop gets the new state when the call rings, then when an agent answers."""
    url = events_url(client)
    assert "exp=" in url and "sig=" in url  # the page carries its own signed link
    response = client.get(url, buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    stream = iter(response.response)
    first = next_event(stream)
    assert "Ann Example" in first and "This call" not in first

    hooks.twilio(twilio_fields("call_started__ringing.form"))
    worker.drain()
    ringing = next_event(stream)
    assert "This call" in ringing and "ringing" in ringing

    hooks.twilio(twilio_fields("call_leg_answered__emma.form"))
    worker.drain()
    answered = next_event(stream)
    assert "in-progress" in answered and "Answered by emma" in answered
    response.close()


def test_the_events_stream_needs_its_signed_link(client, ann):
    """The stream is agent-only too."""
    assert client.get(f"/pop/events?phone={quote(ANN_PHONE)}").status_code == 401


# -- transfers ---------------------------------------------------------------------------------


def test_transfer_within_a_cti_call_shows_on_the_next_agents_pop(client, worker, ann, hooks):
    """Support answers, billing answers: a transfer, and billing's pop shows what happened."""
    hooks.cti(cti_body("newCall.json"))
    hooks.cti(cti_body("answer.json"))
    worker.drain()
    assert "Transferred" not in pop_html(client)
    hooks.cti(cti_body("answer__transfer_to_billing.json"))
    worker.drain()
    html = pop_html(client)
    assert "Answered by Emma Taylor → Bob Billing" in html
    assert "Transferred from Emma Taylor (support) to Bob Billing (billing)" in html
    [transfer] = call_rows(worker.core, "transfer")
    assert transfer.external_id == "9f2c1e7a-4b3d-4e8f-a6c5-0d7b2e9f1a34#to:Bob Billing"
    [call] = call_rows(worker.core)
    assert (call.agent, call.team, call.customer_id) == ("Bob Billing", "billing",
                                                         transfer.customer_id)  # fmt: skip


def test_same_agent_answering_again_is_no_transfer(client, worker, ann, hooks):
    """A repeated answer by the same agent records nothing new."""
    hooks.cti(cti_body("newCall.json"))
    hooks.cti(cti_body("answer.json"))
    worker.drain()
    hooks.cti(cti_body("answer.json", queue="support-2"))  # same agent, new payload
    worker.drain()
    assert call_rows(worker.core, "transfer") == []


def test_twilio_child_legs_to_two_agents_are_a_transfer(client, worker, ann, hooks):
    """ParentCallSid legs answered by emma then bob: one transfer within the parent call."""
    for name in ("call_started__ringing.form", "call_leg_answered__emma.form",
                 "call_leg_answered__transfer_to_bob.form"):  # fmt: skip
        hooks.twilio(twilio_fields(name))
    worker.drain()
    [call] = call_rows(worker.core)
    assert call.external_id == "CA5d8e2b7f4a9c41e08f3b6d2a7c9e1f40"
    assert call.agent == "bob"
    [transfer] = call_rows(worker.core, "transfer")
    assert transfer.text == "Transferred from emma to bob"


# -- notes on open tickets when a call ends -----------------------------------------------------

STAMP = re.compile(r"[A-Z][a-z]{2} \d{1,2} [A-Z][a-z]{2}( \d{4})? \d\d:\d\d")


def undated(text: str) -> str:
    """Return a note with its times ("Sun 6 Dec 03:21", taken now) as <when>."""
    return STAMP.sub("<when>", text)


def test_completed_call_adds_one_note_to_each_open_ticket_and_a_repeat_adds_nothing(
    client, worker, fake_zendesk, ann, hooks
):
    """completed → one private note per open ticket; the same callback again → nothing new."""
    for name in ("call_started__ringing.form", "call_leg_answered__emma.form",
                 "call_ended__completed.form"):  # fmt: skip
        hooks.twilio(twilio_fields(name))
    worker.drain()
    for ticket_id in (5141, 5149):
        [note] = call_notes(fake_zendesk, ticket_id)
        assert note["public"] is False
        assert undated(note["body"]) == (
            "Phone call <when>, 4 min 32 s, answered by emma\n"
            "Caller: Ann Example, +14155550142\n"
            f"{MARKER_PATTERN.search(note['body']).group(0)}"
        )
    assert hooks.twilio(twilio_fields("call_ended__completed.form")).status_code == 200
    worker.drain()
    assert [len(call_notes(fake_zendesk, t)) for t in (5141, 5149)] == [1, 1]


def test_call_note_coming_back_as_a_comment_causes_nothing(
    client, worker, fake_zendesk, ann, hooks
):
    """The note's own comment_added webhook is recognised: no loop."""
    for name in ("call_started__ringing.form", "call_ended__completed.form"):
        hooks.twilio(twilio_fields(name))
    worker.drain()
    [note] = fake_zendesk.notes(5141)
    echo = json.loads(fixture_bytes("ticket_comment_added__own_note.json"))
    echo["id"] = str(uuid.uuid4())
    echo["detail"]["id"] = "5141"
    echo["event"]["comment"]["body"] = note["body"]
    response = hooks.zendesk(json.dumps(echo).encode())
    assert response.status_code == 200
    worker.drain()
    assert len(fake_zendesk.notes(5141)) == 1
    with worker.core.engine.connect() as conn:
        # The summary on 5149 when it was created, and one call note per open ticket.
        assert len(conn.execute(select(writes)).all()) == 3


def test_cti_hangup_after_a_transfer_notes_who_answered(client, worker, fake_zendesk, ann, hooks):
    """A CTI call from 14155550142 (no plus) lands on Ann's open tickets with the transfer."""
    for name in ("newCall.json", "answer.json", "answer__transfer_to_billing.json",
                 "hangup.json"):  # fmt: skip
        hooks.cti(cti_body(name))
    worker.drain()
    [note] = call_notes(fake_zendesk, 5149)
    assert undated(note["body"]).splitlines()[:3] == [
        "Phone call <when>, answered by Emma Taylor → Bob Billing (transferred)",
        "Caller: Ann Example, +14155550142",
        "- <when>: Transferred from Emma Taylor (support) to Bob Billing (billing)",
    ]


def test_a_transferred_call_names_everyone_who_answered_in_later_notes(
    client, worker, fake_zendesk, ann, hooks
):
    """Latest contacts in the next ticket's note name every agent of a transferred call, not
    only the last."""
    for name in ("newCall.json", "answer.json", "answer__transfer_to_billing.json",
                 "hangup.json"):  # fmt: skip
        hooks.cti(cti_body(name))
    hooks.zendesk(ticket("ticket_created__mail.json", "5160"))
    worker.drain()
    [summary] = fake_zendesk.notes(5160)
    assert "phone call, inbound, answered by Emma Taylor → Bob Billing" in summary["body"]


def test_missed_call_is_noted_as_not_answered(client, worker, fake_zendesk, ann, hooks):
    """no-answer: the note says the call was not answered."""
    hooks.twilio(twilio_fields("call_ended__no_answer.form"))
    worker.drain()
    [note] = fake_zendesk.notes(5141)
    assert undated(note["body"]).splitlines()[0] == "Phone call <when>, not answered (no-answer)"


def test_solved_and_stale_tickets_get_no_call_note(client, worker, fake_zendesk, hooks):
    """Only open tickets updated within call_notes.open_days (30) get the note."""
    hooks.zendesk(ticket("ticket_created__mail.json", "5141", timedelta(days=45)))
    hooks.zendesk(ticket("ticket_created__facebook_message.json", "5149", timedelta(1),
                                status="SOLVED"))  # fmt: skip
    hooks.zendesk(ticket("ticket_created__mail.json", "5158", timedelta(days=3)))
    worker.drain()
    for name in ("call_started__ringing.form", "call_ended__completed.form"):
        hooks.twilio(twilio_fields(name))
    worker.drain()
    assert call_notes(fake_zendesk, 5141) == [] and call_notes(fake_zendesk, 5149) == []
    assert len(call_notes(fake_zendesk, 5158)) == 1


def test_call_from_a_shared_line_notes_nobodys_tickets(client, worker, fake_zendesk, hooks):
    """A call that belongs to nobody (a shared line) writes no note anywhere."""
    fake_zendesk.add_user(501, "Bea Family", email="bea@example.com", phone="+14155550160")
    fake_zendesk.add_user(502, "Cal Family", email="cal@example.com", phone="+14155550160")
    fake_zendesk.add_ticket(7001, 501, "Bea's router")
    fake_zendesk.add_ticket(7002, 502, "Cal's invoice")
    hooks.zendesk(ticket("ticket_created__mail.json", "7001", requester_id="501"))
    hooks.zendesk(ticket("ticket_created__mail.json", "7002", requester_id="502"))
    worker.drain()
    for name in ("call_started__ringing.form", "call_ended__completed.form"):
        hooks.twilio(twilio_fields(name, From="+14155550160", Caller="+14155550160"))
    worker.drain()
    assert fake_zendesk.notes(7001) == [] and fake_zendesk.notes(7002) == []


def test_context_api_lists_the_call_and_repeat_contacts(client, worker, ann, hooks):
    """The context API shows the call among the interactions, newest first."""
    hooks.twilio(twilio_fields("call_started__ringing.form"))
    worker.drain()
    payload = client.get(f"/api/v1/context?phone={quote(ANN_PHONE)}", headers=BEARER).get_json()
    first = payload["interactions"][0]
    assert (first["source"], first["kind"], first["channel"]) == ("twilio", "call", "phone")
    assert payload["repeat_contacts_7d"] == 3
    assert payload["customer"]["id"] == ANN or payload["customer"]["name"] == "Ann Example"


def test_shift_link_with_scope_any_phone_opens_any_number_until_it_expires(client, core, ann):
    """A link signed with scope=any-phone takes the caller's number appended by the softphone."""
    link = signed_path(core.link_secret, "/pop", {"scope": "any-phone"}, 60)
    assert "Ann Example" in client.get(f"{link}&phone={quote(ANN_PHONE)}").get_data(as_text=True)
    assert "No history" in client.get(f"{link}&phone=%2B14155550177").get_data(as_text=True)
    expired = signed_path(core.link_secret, "/pop", {"scope": "any-phone"}, -1)
    assert client.get(f"{expired}&phone={quote(ANN_PHONE)}").status_code == 401
    # A phone-bound link cannot be turned into a shift link by adding scope.
    bound = signed_path(core.link_secret, "/pop", {"phone": "+14155550177"}, 60)
    widened = bound.replace("phone=%2B14155550177", "scope=any-phone&phone=%2B14155550142")
    assert client.get(widened).status_code == 401


def test_a_call_id_with_like_wildcards_sees_only_its_own_transfers(
    client, core, worker, ann, hooks
):
    """A CTI call id is any string: "%" in it must not pull in another call's transfers."""
    for name in ("newCall.json", "answer.json", "answer__transfer_to_billing.json"):
        hooks.cti(cti_body(name))
    worker.drain()
    with core.engine.connect() as conn:
        [real] = call_rows(core)
        wildcard = SimpleNamespace(**{**real._mapping, "external_id": "%"})
        assert call_facts(conn, wildcard)["transfers"] == []
        assert call_facts(conn, real)["transfers"] != []
