"""Zendesk end to end: webhook in, customer recognised, one private note out."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from middleware.errors import PermanentUpstreamError
from middleware.notes.outbox import MARKER_PATTERN
from middleware.store.tables import deliveries, interactions, writes
from plugins.zendesk.client import ZendeskClient
from tests.payloads import fixture_bytes, zendesk_event
from tests.values import ANN, ZENDESK_EMAIL, ZENDESK_TOKEN


def test_first_contact_gets_no_note(client, worker, fake_zendesk, hooks):
    """A customer's first ticket gets no note (note_on_first_contact is off)."""
    assert hooks.zendesk(fixture_bytes("ticket_created__mail.json")).status_code == 200
    worker.drain()
    assert fake_zendesk.notes(5141) == []


def test_new_ticket_of_known_customer_gets_one_note_naming_the_earlier_ticket(
    client, worker, fake_zendesk, core, hooks
):
    """A second ticket on another channel gets one private note, as rich text: the customer
    first, the earlier ticket as agents name it (#5141) with its link and the customer's words,
    one line of how they were recognised."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    response = hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    assert response.status_code == 200
    worker.drain()

    [note] = fake_zendesk.notes(5149)
    assert note["public"] is False
    link = f"{fake_zendesk.url}/agent/tickets/5141"
    words = ("Hi, I was charged twice for invoice INV-2025-001. Card [card ending 1111] shows "
             "two payments. Please refund one.")  # fmt: skip
    marker = MARKER_PATTERN.search(note["body"]).group(0)
    assert note["body"] == (
        "Ann Example\n"
        "Open:\n"
        f"- #5141 · new · Charged twice for my January invoice · {link}\n"
        f'"{words}"\n'
        "Mood: negative\n"
        "Recognised by email, phone and facebook\n"
        f"{marker}"
    )
    assert note["html_body"] == (
        "<p>Ann Example</p><p>Open:</p><ul><li>#5141 · new · "
        f'Charged twice for my January invoice · <a href="{link}" rel="noopener noreferrer">'
        f"{link}</a><br>&quot;{words}&quot;</li></ul>"
        "<p>Mood: negative</p><p>Recognised by email, phone and facebook</p>"
        f"<p>{marker}</p>"
    )


def test_sending_the_same_webhook_again_produces_nothing_new(
    client, worker, fake_zendesk, core, hooks
):
    """A duplicate delivery (same event id) is acknowledged and causes no second note."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    body = fixture_bytes("ticket_created__facebook_message.json")
    hooks.zendesk(body)
    worker.drain()
    again = hooks.zendesk(body)
    assert again.status_code == 200
    worker.drain()
    assert len(fake_zendesk.notes(5149)) == 1
    with core.engine.connect() as conn:
        assert len(conn.execute(select(deliveries)).all()) == 2


def test_same_ticket_created_twice_with_new_event_ids_writes_once(
    client, worker, fake_zendesk, hooks
):
    """Even a redelivery under a new event id writes a ticket's summary only once."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()
    hooks.zendesk(zendesk_event("ticket_created__facebook_message.json", event_id="another-id"))
    worker.drain()
    assert len(fake_zendesk.notes(5149)) == 1


def test_own_note_coming_back_causes_nothing(client, worker, core, written_before, hooks):
    """A note written before markers were keyed, returning as a comment, is ignored."""
    written_before("zendesk", "5158", "co-7-summary")
    response = hooks.zendesk(fixture_bytes("ticket_comment_added__own_note.json"))
    assert response.status_code == 200
    assert response.get_json() == {"ignored": "own note"}
    assert worker.drain() == 0
    with core.engine.connect() as conn:
        assert conn.execute(select(deliveries)).first() is None


def test_a_marker_typed_by_someone_else_is_no_own_note(
    client, worker, core, written_before, hooks, fake_zendesk
):
    """The marker text on a ticket Carryover never wrote it to is an ordinary comment."""
    import json

    written_before("zendesk", "5158", "co-7-summary")  # another ticket's note
    payload = json.loads(fixture_bytes("ticket_comment_added.json"))
    payload["event"]["comment"]["body"] = "Any news? [Carryover ref co-7-summary]"
    response = hooks.zendesk(json.dumps(payload).encode())
    assert response.status_code == 200 and "ignored" not in (response.get_json() or {})
    worker.drain()
    with core.engine.connect() as conn:
        notes = conn.execute(select(interactions).where(interactions.c.kind == "message")).all()
    assert [n.text for n in notes] == ["Any news? [Carryover ref co-7-summary]"]


def test_a_forged_keyed_marker_is_no_own_note(client, core, hooks):
    """A marker with a MAC made without the installation's secret is not Carryover's."""
    import json

    payload = json.loads(fixture_bytes("ticket_comment_added.json"))
    payload["event"]["comment"]["body"] = "Hi [Carryover ref co-7-summary-0123456789ab]"
    response = hooks.zendesk(json.dumps(payload).encode())
    assert "ignored" not in (response.get_json() or {})


def test_real_note_echo_after_a_write_causes_no_second_note(
    client, worker, fake_zendesk, core, hooks
):
    """The exact note Carryover wrote, sent back as a comment event, writes nothing new."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()
    note = fake_zendesk.notes(5149)[0]
    echo = zendesk_event("ticket_comment_added__own_note.json", id="5149", event_id="echo-1")
    import json

    payload = json.loads(echo)
    payload["event"]["comment"]["body"] = note["body"]
    response = hooks.zendesk(json.dumps(payload).encode())
    assert response.get_json() == {"ignored": "own note"}
    # The note is rich text: its HTML body alone is recognised as well.
    del payload["event"]["comment"]["body"]
    payload["event"]["comment"]["html_body"] = note["html_body"]
    payload["id"] = "echo-2"
    response = hooks.zendesk(json.dumps(payload).encode())
    assert response.get_json() == {"ignored": "own note"}
    worker.drain()
    with core.engine.connect() as conn:
        assert len(conn.execute(select(writes)).all()) == 1


def test_a_note_too_large_as_html_goes_as_plain_text(core, fake_zendesk):
    """Within Zendesk's 64 KB of one comment: a note whose HTML would pass it goes as text."""
    plugin = core.registry.get("zendesk")
    small = "Ann Example\n- #5141 · https://acme.zendesk.com/agent/tickets/5141"
    plugin.write_note("5149", small)
    large = "- <&> " * 12_000  # 72 KB of text, more as HTML
    plugin.write_note("5158", large)
    [rich] = fake_zendesk.notes(5149)
    assert rich["html_body"].startswith("<p>Ann Example</p><ul><li>#5141 · <a href=")
    [plain] = fake_zendesk.notes(5158)
    assert plain["body"] == large
    assert plain["html_body"].startswith('<div class="zd-comment"')


def test_status_change_keeps_open_items_true(client, worker, core, hooks, fake_zendesk):
    """A solved status (upper-case in webhooks) closes the ticket in the timeline."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    hooks.zendesk(fixture_bytes("ticket_status_changed.json"))
    worker.drain()
    with core.engine.connect() as conn:
        row = conn.execute(select(interactions).where(interactions.c.external_id == "5141")).one()
    assert row.status == "solved"
    assert row.channel == "email"


def test_status_change_before_creation_is_not_undone_by_the_late_create(
    client, worker, core, hooks, fake_zendesk
):
    """Reordered events: a later status survives an earlier ticket.created arriving late."""
    hooks.zendesk(fixture_bytes("ticket_status_changed.json"))
    worker.drain()
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    with core.engine.connect() as conn:
        row = conn.execute(select(interactions).where(interactions.c.external_id == "5141")).one()
    assert row.status == "solved"
    assert row.channel == "email"
    assert row.subject == "Charged twice for my January invoice"


def test_customer_comment_joins_the_timeline_and_agent_comment_does_not(
    client, worker, core, hooks, fake_zendesk
):
    """A requester's comment is stored as a message; an agent's comment is ignored."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_comment_added.json"))
    agent = hooks.zendesk(fixture_bytes("ticket_comment_added__by_agent.json"))
    assert agent.get_json() == {"ignored": "ticket.comment_added.by_agent"}
    worker.drain()
    with core.engine.connect() as conn:
        rows = conn.execute(select(interactions).order_by(interactions.c.id)).all()
    assert [(r.kind, r.external_id) for r in rows] == [
        ("ticket", "5141"),
        ("message", "5141#39016743929486"),
    ]
    assert rows[0].customer_id == rows[1].customer_id is not None


def test_card_numbers_are_redacted_before_storage(client, worker, core, hooks, fake_zendesk):
    """A card number in a ticket description is stored only as its last 4 digits."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    with core.engine.connect() as conn:
        text = conn.execute(select(interactions.c.text)).scalar()
        raw = conn.execute(select(deliveries.c.body)).scalar()
    assert "4111 1111 1111 1111" not in text
    assert "[card ending 1111]" in text
    assert b"4111 1111 1111 1111" not in bytes(raw)


def test_trigger_body_is_accepted_and_links_by_email_and_phone(
    client, worker, fake_zendesk, core, hooks
):
    """The README's trigger body maps a phone-call ticket to the same customer."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    response = hooks.zendesk(fixture_bytes("trigger_ticket_created.json"))
    assert response.status_code == 200
    worker.drain()
    with core.engine.connect() as conn:
        rows = conn.execute(select(interactions).order_by(interactions.c.id)).all()
    assert [r.channel for r in rows] == ["email", "phone"]
    assert rows[0].customer_id == rows[1].customer_id
    notes = fake_zendesk.notes(5160)
    assert len(notes) == 1 and "5141" in notes[0]["body"]


def test_requester_lookups_are_cached(client, worker, fake_zendesk, hooks):
    """Two tickets of one requester cost one user look-up: one API call, which reads the
    user and their identities at once (show_many, identities side-loaded)."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()
    lookups = [urlsplit(p) for m, p, *_ in fake_zendesk.requests_log
               if p.startswith("/api/v2/users/")]  # fmt: skip
    assert [(u.path, parse_qs(u.query)) for u in lookups] == [
        ("/api/v2/users/show_many.json", {"ids": [str(ANN)], "include": ["identities"]})
    ]


def test_the_test_webhook_button_body_is_acknowledged_and_ignored(client, core, hooks):
    """Zendesk's test body (event and id, no ticket) gets 200 ignored and is not stored."""
    response = hooks.zendesk(fixture_bytes("test_webhook.json"))
    assert response.status_code == 200
    assert "test delivery" in response.get_json()["ignored"]
    with core.engine.connect() as conn:
        assert conn.execute(select(deliveries)).first() is None


def test_trigger_body_with_raw_line_breaks_in_the_description_is_accepted(
    client, worker, core, hooks, fake_zendesk
):
    """Trigger placeholders are raw text: a multi-line description still parses."""
    body = fixture_bytes("trigger_ticket_created.json").replace(
        b"about the double charge again.", b"about the double charge.\nSecond line."
    )
    assert b"\nSecond line" in body
    assert hooks.zendesk(body).status_code == 200
    worker.drain()
    with core.engine.connect() as conn:
        text = conn.execute(select(interactions.c.text)).scalar()
    assert text == "Customer called about the double charge.\nSecond line."


def test_nul_characters_in_customer_text_are_dropped_not_retried(
    client, worker, core, hooks, fake_zendesk
):
    """A NUL in a ticket's subject (PostgreSQL refuses it) is dropped and the ticket stored."""
    body = zendesk_event("ticket_created__mail.json", subject="Charged\u0000 twice")
    assert hooks.zendesk(body).status_code == 200
    worker.drain()
    with core.engine.connect() as conn:
        assert conn.execute(select(interactions.c.subject)).scalar() == "Charged twice"
        assert conn.execute(select(deliveries.c.status)).scalar() == "done"


def test_a_note_is_one_put_of_the_comment_alone(fake_zendesk):
    """A note is the PUT zenpy's ticket update sends: the ticket's id and a private comment,
    as HTML when given, else as text; nothing else of the ticket. A ticket gone is a
    permanent failure."""
    client = ZendeskClient(fake_zendesk.url, ZENDESK_EMAIL, ZENDESK_TOKEN, timeout=5.0)
    fake_zendesk.add_ticket(7001, ANN, "Router")
    client.add_private_note(7001, "Hello\nco-1-summary", "<p>Hello</p>")
    client.add_private_note(7001, "Plain\nco-2-summary")
    puts = [(path, json.loads(body)) for method, path, body, _t in fake_zendesk.requests_log
            if method == "PUT"]  # fmt: skip
    assert puts == [
        ("/api/v2/tickets/7001.json",
         {"ticket": {"id": 7001, "comment": {"html_body": "<p>Hello</p>", "public": False}}}),
        ("/api/v2/tickets/7001.json",
         {"ticket": {"id": 7001, "comment": {"body": "Plain\nco-2-summary", "public": False}}}),
    ]  # fmt: skip
    with pytest.raises(PermanentUpstreamError, match="7002 not found"):
        client.add_private_note(7002, "Lost")
