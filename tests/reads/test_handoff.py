"""Handoff notes typed in the screen-pop: stored on the call going on, shown to the next agent
live, and part of the note written when the call ends."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape
from urllib.parse import quote

import pytest
from sqlalchemy import select, update

from middleware.customers.edits import split_identity
from middleware.notes.outbox import MARKER_PATTERN
from middleware.reads.context_api import signed_path
from middleware.store.tables import identities, interactions, utcnow, writes
from tests.payloads import twilio_fields
from tests.reads.test_calls_pop import (
    ANN_PHONE,
    BEARER,
    call_notes,
    events_url,
    next_event,
    pop_html,
    ticket,
    undated,
)

CALL_SID = "CA5d8e2b7f4a9c41e08f3b6d2a7c9e1f40"
NOTE = "Charged twice for INV-1042; refund approved up to $50, needs manager sign-off."
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def ann(client, worker, fake_zendesk, hooks):
    """Ann wrote an email (ticket 5141) and a Facebook message (ticket 5149) this week."""
    hooks.zendesk(ticket("ticket_created__mail.json", "5141", timedelta(days=2)))
    hooks.zendesk(ticket("ticket_created__facebook_message.json", "5149", timedelta(1)))
    worker.drain()


@pytest.fixture
def answered(ann, worker, hooks):
    """Ann's call rings and emma answers it."""
    for name in ("call_started__ringing.form", "call_leg_answered__emma.form"):
        assert hooks.twilio(twilio_fields(name)).status_code == 200
    worker.drain()


def handoff_url(client, phone: str = ANN_PHONE) -> str:
    """Return the signed handoff link the pop page carries for its script."""
    match = re.search(r'<form id="handoff"[^>]* data-url="([^"]+)"', pop_html(client, phone))
    assert match, "the pop carries no handoff link"
    return unescape(match.group(1))


def post_note(client, text: str = NOTE, url: str | None = None, **headers: str):
    """POST a handoff note as the pop's script does (JSON through the page's signed link)."""
    return client.post(url or handoff_url(client), data=json.dumps({"text": text}),
                       headers={**JSON, **headers})  # fmt: skip


def handoff_rows(core):
    with core.engine.connect() as conn:
        query = select(interactions).where(interactions.c.kind == "handoff")
        return conn.execute(query.order_by(interactions.c.id)).all()


# -- stored and shown ---------------------------------------------------------------------------


@pytest.mark.usefixtures("answered")
def test_a_note_through_the_pops_signed_link_is_stored_on_the_call_and_shown(client, core):
    """201; a handoff in the call's thread, by the answering agent, shown in the pop."""
    url = handoff_url(client)
    assert url.startswith("/pop/handoff?") and "exp=" in url and "sig=" in url
    response = post_note(client, url=url)
    assert response.status_code == 201
    assert response.get_json() == {"saved": True, "text": NOTE}
    [note] = handoff_rows(core)
    assert (note.source, note.external_id, note.kind, note.channel, note.direction) == (
        "twilio", f"{CALL_SID}#note:1", "handoff", "phone", "internal")  # fmt: skip
    assert (note.agent, note.said_by, note.text) == ("emma", "agent", NOTE)
    with core.engine.connect() as conn:
        call = conn.execute(select(interactions).where(interactions.c.kind == "call")).one()
    assert note.customer_id == call.customer_id is not None
    html = pop_html(client)
    assert re.search(r"Handoff note from emma \(\w{3} \d{1,2} \w{3} \d\d:\d\d\):", html)
    assert NOTE in html


@pytest.mark.usefixtures("answered")
def test_the_bearer_agent_key_may_post_a_note_too(client, core):
    """An agent tool with the key posts without a signed link."""
    response = post_note(client, url=f"/pop/handoff?phone={quote(ANN_PHONE)}", **BEARER)
    assert response.status_code == 201
    assert [r.text for r in handoff_rows(core)] == [NOTE]


@pytest.mark.usefixtures("answered")
def test_an_open_pop_gets_the_note_on_its_event_stream(client):
    """The pop's live stream sends a new body with the note as soon as it is saved."""
    response = client.get(events_url(client), buffered=False)
    stream = iter(response.response)
    assert "Handoff note" not in next_event(stream)
    assert post_note(client).status_code == 201
    body = next_event(stream)
    assert "Handoff note from emma" in body and "INV-1042" in body
    response.close()


@pytest.mark.usefixtures("answered")
def test_after_the_transfer_the_next_agents_pop_shows_the_note(client, worker, hooks):
    """emma leaves a note, the call goes to bob: the pop of the same number shows both."""
    assert post_note(client).status_code == 201
    hooks.twilio(twilio_fields("call_leg_answered__transfer_to_bob.form"))
    worker.drain()
    html = pop_html(client)
    assert "Answered by emma → bob" in html
    assert "Transferred from emma to bob" in html
    assert "Handoff note from emma" in html and "INV-1042" in html
    assert "data-call-live" in html  # bob may leave a note of his own


@pytest.mark.usefixtures("answered")
def test_the_note_written_when_the_call_ends_lists_the_handoff_notes(
    client, worker, hooks, fake_zendesk
):
    """The call note on Ann's open tickets ends with the notes, who left them and when."""
    assert post_note(client).status_code == 201
    hooks.twilio(twilio_fields("call_leg_answered__transfer_to_bob.form"))
    worker.drain()
    assert post_note(client, "Line one\nline two").status_code == 201
    hooks.twilio(twilio_fields("call_ended__completed.form"))
    worker.drain()
    with worker.core.engine.connect() as conn:
        query = select(writes.c.body).where(writes.c.target_ref == "5141",
                                            writes.c.purpose == "call")  # fmt: skip
        [body] = conn.execute(query).scalars()
    assert undated(MARKER_PATTERN.sub("", body)).strip() == "\n".join([
        "Phone call <when>, 4 min 32 s, answered by emma → bob (transferred)",
        "Caller: Ann Example, +14155550142",
        "- <when>: Transferred from emma to bob",
        "Handoff notes:",
        f"- emma, <when>: {NOTE}",
        "- bob, <when>: Line one",
        "  line two",  # in the note's list item, not a line of its own
    ])  # fmt: skip
    [note] = call_notes(fake_zendesk, 5141)  # as the agent reads it in the ticket
    assert "Handoff notes:\n- emma, " in note["body"] and NOTE in note["body"]


@pytest.mark.usefixtures("answered")
def test_a_note_is_the_agents_words_never_what_the_customer_already_said(client):
    """Not under "Already said", not a contact, not in the latest contacts of the context."""
    before = client.get(f"/api/v1/context?phone={quote(ANN_PHONE)}", headers=BEARER).get_json()
    assert post_note(client).status_code == 201
    after = client.get(f"/api/v1/context?phone={quote(ANN_PHONE)}", headers=BEARER).get_json()
    assert all("INV-1042" not in s["text"] for s in after["said"])
    assert after["said"] == before["said"]
    assert [i["kind"] for i in after["interactions"]] == [i["kind"] for i in before["interactions"]]
    assert after["repeat_contacts_7d"] == before["repeat_contacts_7d"]
    assert "INV-1042" not in after["summary"]
    html = pop_html(client)
    said = html[html.index("Already said") : html.index("Open items")]
    assert "INV-1042" not in said


@pytest.mark.usefixtures("answered")
def test_card_numbers_are_redacted_and_control_characters_dropped(client, core):
    """A card number keeps its last 4 digits; newlines stay, tabs become spaces, the rest go."""
    text = "Card 4111 1111 1111 1111 on file.\r\nRefund\tit\x00\x1b[31m please\x07"
    response = post_note(client, text)
    assert response.status_code == 201
    [note] = handoff_rows(core)
    assert "4111 1111 1111" not in note.text and "1111" in note.text
    assert note.text.endswith("on file.\nRefund it[31m please")
    assert response.get_json()["text"] == note.text


@pytest.mark.usefixtures("answered")
def test_notes_are_numbered_within_the_call_and_a_double_click_saves_one(client, core):
    """The same text again right away is stored once; the next note gets the next number."""
    url = handoff_url(client)
    assert post_note(client, url=url).status_code == 201
    assert post_note(client, url=url).status_code == 201
    assert post_note(client, "Second thought", url=url).status_code == 201
    assert [r.external_id.split("#")[1] for r in handoff_rows(core)] == ["note:1", "note:2"]


# -- refused ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("answered")
def test_a_note_needs_a_key_or_a_valid_signed_link(client, core):
    """Unsigned, expired, forged, or signed for another path or number: 401, nothing stored."""
    path = "/pop/handoff"
    expired = signed_path(core.link_secret, path, {"phone": ANN_PHONE}, -1)
    good = handoff_url(client)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    pop_link = signed_path(core.link_secret, "/pop", {"phone": ANN_PHONE}, 60)
    other = signed_path(core.link_secret, path, {"phone": "+14155550177"}, 60)
    retargeted = other.replace("4155550177", "4155550142")
    for url in (f"{path}?phone={quote(ANN_PHONE)}", expired, forged,
                pop_link.replace("/pop?", f"{path}?"), retargeted):  # fmt: skip
        response = post_note(client, url=url)
        assert response.status_code == 401, url
        assert "Ann" not in response.get_data(as_text=True)
    assert handoff_rows(core) == []


@pytest.mark.usefixtures("answered")
def test_only_json_from_the_pop_itself_is_taken(client, core):
    """A form or text body is 415; a request another site made (Sec-Fetch-Site) is 403."""
    url = handoff_url(client)
    form = client.post(url, data={"text": NOTE})
    assert form.status_code == 415 and "application/json" in form.get_json()["error"]
    plain = client.post(url, data=json.dumps({"text": NOTE}), content_type="text/plain")
    assert plain.status_code == 415
    assert post_note(client, url=url, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert post_note(client, url=url, **{"Sec-Fetch-Site": "same-origin"}).status_code == 201
    assert len(handoff_rows(core)) == 1


@pytest.mark.usefixtures("answered")
def test_empty_too_long_and_malformed_notes_are_400(client, core):
    """Each with a reason; 500 characters is the most a note holds."""
    url = handoff_url(client)
    for text in ("", "   \n\t ", "\x00\x07"):
        response = post_note(client, text, url=url)
        assert response.status_code == 400
        assert "is empty" in response.get_json()["error"]
    long = post_note(client, "x" * 501, url=url)
    assert long.status_code == 400
    assert long.get_json()["error"] == (
        "A handoff note holds at most 500 characters (this one has 501)"
    )
    for body in (b"{", b"[]", b'{"text": 5}', b'{"note": "hi"}', b"\xff\xfe",
                 b'{"text": "a", "text": "b"}', b'{"text": "\\ud800"}',
                 b"[" * 5000 + b"]" * 5000, b"{}" * 10_000):  # fmt: skip
        response = client.post(url, data=body, headers=JSON)
        assert response.status_code in (400, 413), body[:20]
        assert response.get_json()["error"]
    assert client.post("/pop/handoff?phone=nonsense", data=b"{}", headers={**JSON, **BEARER}
                       ).status_code == 400  # fmt: skip
    assert handoff_rows(core) == []
    assert post_note(client, "y" * 500, url=url).status_code == 201


# -- no call to note -----------------------------------------------------------------------------


def test_no_call_in_progress_is_409(client, core, worker, hooks, ann):
    """Before any call, and once the call has ended: 409 'no call in progress'."""
    response = post_note(client)
    assert response.status_code == 409
    assert "No call in progress" in response.get_json()["error"]
    for name in ("call_started__ringing.form", "call_ended__completed.form"):
        hooks.twilio(twilio_fields(name))
    worker.drain()
    assert "No call in progress" in post_note(client).get_json()["error"]
    assert handoff_rows(core) == []


def test_a_call_older_than_the_live_window_takes_no_note(client, core, worker, hooks, ann):
    """A call left ringing hours ago (its end never reported) is history, not this call."""
    hooks.twilio(twilio_fields("call_started__ringing.form"))
    worker.drain()
    assert post_note(client).status_code == 201  # while ringing: no agent yet
    assert handoff_rows(core)[0].agent is None
    with core.engine.begin() as conn:
        conn.execute(update(interactions).where(interactions.c.kind == "call").values(
            updated_at=utcnow() - timedelta(hours=3)))  # fmt: skip
    assert post_note(client, "later").status_code == 409


def test_unknown_withheld_and_shared_numbers_are_409(client, core, worker, hooks, fake_zendesk):
    """Nobody's number, a withheld one, a shared line: no customer's call to put a note on."""
    unknown = post_note(client, url="/pop/handoff?phone=%2B14155550177", **BEARER)
    assert unknown.status_code == 409 and "No customer holds" in unknown.get_json()["error"]
    withheld = post_note(client, url="/pop/handoff?phone=anonymous", **BEARER)
    assert withheld.status_code == 409 and "withheld" in withheld.get_json()["error"]
    fake_zendesk.add_user(501, "Bea Family", email="bea@example.com", phone="+14155550160")
    fake_zendesk.add_user(502, "Cal Family", email="cal@example.com", phone="+14155550160")
    hooks.zendesk(ticket("ticket_created__mail.json", "7001", requester_id="501"))
    hooks.zendesk(ticket("ticket_created__mail.json", "7002", requester_id="502"))
    worker.drain()
    hooks.twilio(twilio_fields("call_started__ringing.form", From="+14155550160"))
    worker.drain()
    shared = post_note(client, url=handoff_url(client, "+14155550160"))
    assert shared.status_code == 409 and "shared line" in shared.get_json()["error"]
    assert handoff_rows(core) == []


@pytest.mark.usefixtures("answered")
def test_a_note_moves_with_its_call_when_an_admin_splits_the_number_off(client, core):
    """The note carries the call's identifiers: a split gives it to the call's new customer."""
    assert post_note(client).status_code == 201
    with core.engine.begin() as conn:
        phone = conn.execute(select(identities).where(identities.c.value == ANN_PHONE)).one()
        new_customer = split_identity(conn, phone.customer_id, phone.id, "ada")
        call = conn.execute(select(interactions).where(interactions.c.kind == "call")).one()
    [note] = handoff_rows(core)
    assert call.customer_id == note.customer_id == new_customer
