"""Generic inbound (/hooks/generic): Standard Webhooks, the shipped mapping's fixtures, and
preferred channels set by a survey answer, with where they came from."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from middleware.customers.edits import merge_by_admin
from middleware.customers.export import export_customer
from middleware.errors import InvalidSignature
from middleware.ingest import standard_webhooks
from middleware.installation import Installation, build_installation
from middleware.store.tables import deliveries, interactions
from tests.payloads import fixture_bytes, generic_body, generic_headers
from tests.values import AGENT_KEY

AUTH = {"Authorization": f"Bearer {AGENT_KEY}"}
ANN_EMAIL = "ann.example@example.com"
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID, SPEC_TIME, SPEC_BODY = (
    "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "1614265330",
    b'{"test": 2432232314}',
)
SPEC_SIGNATURE = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.fixture
def core(database_url: str, zendesk_api_url: str, make_config) -> Iterator[Installation]:
    """Build the test installation with the generic inbound integration connected too."""
    built = build_installation(make_config(database_url, zendesk_api_url, phone=True,
                                           generic=True))  # fmt: skip
    yield built
    built.dispose()


def count(core: Installation, table) -> int:
    """Count the rows of a table."""
    with core.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def records(core: Installation) -> list[tuple]:
    """Return the generic source's interactions as (kind, channel, external_id, customer)."""
    with core.engine.connect() as conn:
        rows = conn.execute(
            select(interactions.c.kind, interactions.c.channel, interactions.c.external_id,
                   interactions.c.customer_id)
            .where(interactions.c.source == "generic").order_by(interactions.c.external_id)
        ).all()  # fmt: skip
    return [tuple(r) for r in rows]


def context(client, **query) -> dict:
    """GET /api/v1/context as an agent."""
    return client.get("/api/v1/context", query_string=query, headers=AUTH).get_json()


def trail(core: Installation) -> list[str]:
    """Return the details of the newest delivery's trail (what each step did)."""
    with core.engine.connect() as conn:
        row = conn.execute(select(deliveries.c.trail).order_by(deliveries.c.id.desc())).first()
    assert row is not None
    return [step["detail"] for step in json.loads(row.trail)]


# -- the signature -----------------------------------------------------------------------------


def test_standard_webhooks_spec_vector_signs_and_verifies(monkeypatch):
    """The spec's vector signs to its signature and verifies at its own time, not 301 s later."""
    assert standard_webhooks.sign(SPEC_SECRET, SPEC_ID, SPEC_TIME, SPEC_BODY) == SPEC_SIGNATURE
    headers = {"webhook-id": SPEC_ID, "webhook-timestamp": SPEC_TIME,
               "webhook-signature": f"v1,{SPEC_SIGNATURE}"}  # fmt: skip
    monkeypatch.setattr(time, "time", lambda: int(SPEC_TIME) + 300)
    assert standard_webhooks.verify(SPEC_SECRET, headers, SPEC_BODY) == SPEC_ID
    monkeypatch.setattr(time, "time", lambda: int(SPEC_TIME) + 301)
    with pytest.raises(InvalidSignature, match="300s off"):
        standard_webhooks.verify(SPEC_SECRET, headers, SPEC_BODY)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"secret": "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"}, "signature does not match"),
        ({"offset": -305}, "s off"),
        ({"offset": 305}, "s off"),
        ({"drop": "webhook-signature"}, "missing webhook-id, webhook-timestamp or webhook-sig"),
    ],
)  # fmt: skip
def test_bad_missing_or_stale_signature_is_401_and_nothing_stored(client, core, change, error):
    """A wrong secret, a timestamp over 5 minutes off or no signature: 401, nothing stored."""
    body = generic_body("survey_answered.json")
    change = dict(change)  # the parameters are shared by both stores' runs
    drop = change.pop("drop", None)
    if "offset" in change:
        # A few seconds past the window: the request takes time, and stamps are whole seconds.
        change["timestamp"] = int(time.time()) + change.pop("offset")
    headers = generic_headers(body, **change)
    headers.pop(drop or "", None)
    response = client.post("/hooks/generic", data=body, headers=headers)
    assert response.status_code == 401
    assert error in response.get_json()["error"]
    assert count(core, deliveries) == 0


# -- refusals and ignored events ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "body is not valid JSON"),
        (b'{"timestamp": "2026-12-05T14:03:00Z", "data": {}}', "type: missing"),
        (b'{"type": "survey answered", "data": {}}', "type: expected a full-stop delimited name"),
        (b'{"type": "survey.answered", "data": "yes"}', "data: expected a JSON object"),
        (b'["survey.answered"]', "body: expected a JSON object"),
    ],
)
def test_malformed_body_is_400_naming_what_and_nothing_stored(client, core, hooks, body, error):
    """A signed body that is no event (no type, data not an object): 400 saying what is wrong."""
    response = hooks.generic(body)
    assert response.status_code == 400
    assert response.get_json() == {"error": response.get_json()["error"]}
    assert error in response.get_json()["error"]
    assert count(core, deliveries) == 0


def test_a_type_the_mapping_does_not_define_is_200_ignored(client, core, hooks):
    """test.ping is not in the mapping: 200 {"ignored": "test.ping"}, nothing stored."""
    response = hooks.generic(generic_body("test_ping.json"))
    assert response.status_code == 200
    assert response.get_json() == {"ignored": "test.ping"}
    assert count(core, deliveries) == 0


def test_a_mapping_that_does_not_fit_is_a_failed_delivery_not_a_5xx(client, core, hooks, worker):
    """A survey answer without data.id is accepted (200) and fails in the worker, saying where."""
    response = hooks.generic(generic_body("survey_answered.json", id=None))
    assert response.status_code == 200
    worker.drain()
    with core.engine.connect() as conn:
        row = conn.execute(select(deliveries.c.status, deliveries.c.last_error)).one()
    assert row.status == "dead"
    assert "events.survey.answered.interaction.external_id" in row.last_error
    assert count(core, interactions) == 0


def test_a_retried_webhook_id_causes_nothing_new(client, core, hooks, worker):
    """The same webhook-id twice (a retry): 200 both times, one delivery, one record."""
    body = generic_body("store_visit.json")
    assert hooks.generic(body, webhook_id="msg_visit_0042").status_code == 200
    assert hooks.generic(body, webhook_id="msg_visit_0042").status_code == 200
    worker.drain()
    assert count(core, deliveries) == 1
    assert len(records(core)) == 1


# -- each fixture, mapped ------------------------------------------------------------------------


def test_every_fixture_lands_on_the_right_customer(client, core, hooks, worker):
    """Ann's visit, chat and survey are one customer; Dan's letter and Carla's kiosk their own."""
    for name in ("store_visit.json", "chatbot_conversation.json", "survey_answered.json",
                 "letter_scanned.json", "store_visit__kiosk.json"):  # fmt: skip
        assert hooks.generic(generic_body(name)).status_code == 200
    worker.drain()
    ann = context(client, email=ANN_EMAIL)["customer"]["id"]
    dan = context(client, email="dan.ortiz@example.com")["customer"]["id"]
    carla = context(client, phone="+14155550177")["customer"]["id"]
    assert len({ann, dan, carla}) == 3
    assert records(core) == [
        ("message", "chat", "conv-8f14e45f", ann),
        ("visit", "in_person", "kiosk-7-20261204-0913", carla),
        ("survey", "web", "resp-20261205-1187", ann),
        ("message", "letter", "scan-2026-12-03-0005", dan),
        ("visit", "in_person", "visit-20261205-0042", ann),
    ]
    assert context(client, phone="+14155550177")["customer"]["name"] == "Carla Rossi"


def test_a_long_numeric_id_is_kept_and_a_card_number_in_text_is_redacted(client, hooks, worker):
    """A record id that passes the Luhn check stays; the same digits in the text do not."""
    hooks.generic(generic_body("letter_scanned.json", id="4111111111111111",
                               text="Please refund card 4111 1111 1111 1111."))  # fmt: skip
    worker.drain()
    [item] = context(client, email="dan.ortiz@example.com")["interactions"]
    assert item["external_id"] == "4111111111111111"
    assert context(client, email="dan.ortiz@example.com")["said"][0]["text"] == (
        "Please refund card [card ending 1111]."
    )


def test_a_chatbot_conversation_says_only_the_customers_lines(client, core, hooks, worker):
    """Only the customer's chat lines are what they already said; the bot's are not."""
    hooks.generic(generic_body("chatbot_conversation.json"))
    worker.drain()
    said = context(client, email=ANN_EMAIL)["said"]
    assert [(s["channel"], s["text"]) for s in said] == [
        ("chat", "I returned a blender in the store on Saturday and the refund is not on my card "
                 "yet. Please call me if it takes longer, I would rather not chat again."),
    ]  # fmt: skip


def test_a_letter_and_a_visit_are_worded_for_agents(client, core, hooks, worker):
    """The context names a letter, a store visit and the in-person channel as agents say them."""
    hooks.generic(generic_body("store_visit.json"))
    hooks.generic(generic_body("letter_scanned.json", customer={"email": ANN_EMAIL}))
    worker.drain()
    summary = context(client, email=ANN_EMAIL)["summary"]
    assert "Ann Example — 2 contacts in 30 days: in person, letter" in summary
    assert "store visit · in person · Returned the blender bought online · Ben Carter / Market " \
           "Street store" in summary  # fmt: skip
    assert "letter · letter · Complaint about a late delivery · Mailroom" in summary


# -- preferred channels from a survey answer ------------------------------------------------------


def test_a_survey_answer_sets_the_preferred_channels_with_their_source(
    admin_client, core, hooks, worker
):
    """After a survey answer the context, the admin page and the export say phone, email from
    the survey, and the trail says so."""
    hooks.generic(generic_body("survey_answered.json"))
    worker.drain()
    customer = context(admin_client, email=ANN_EMAIL)["customer"]
    assert customer["preferred_channels"] == ["phone", "email"]
    assert customer["preferred_channels_source"] == "survey"
    assert trail(core)[-1].endswith(
        "preferred channels phone, email (from generic:survey:resp-20261205-1187)"
    )
    page = admin_client.get(f"/admin/customers/{customer['id']}").data.decode()
    assert "Preferred channels phone, email: from a survey answer on 2026-12-05 14:03 UTC" in page
    with core.engine.connect() as conn:
        delivery = conn.execute(select(deliveries.c.id)).scalar_one()
        exported = export_customer(conn, customer["id"])
    assert f'href="/admin/deliveries/in/{delivery}">delivery {delivery}</a>' in page
    assert exported is not None
    source = exported["customer"]["preferred_channels_source"]
    assert (source["source"], source["caused_by"]) == (
        "survey",
        "generic:survey:resp-20261205-1187",
    )


def test_unknown_channels_in_a_survey_answer_are_dropped_and_said(client, core, hooks, worker):
    """A survey naming a pigeon keeps the real channels and says in the trail what it dropped."""
    answers = {"preferred_channels": ["SMS", "pigeon"], "comment": "ok"}
    hooks.generic(generic_body("survey_answered.json", answers=answers))
    worker.drain()
    assert context(client, email=ANN_EMAIL)["customer"]["preferred_channels"] == ["sms"]
    assert trail(core)[-1].endswith(
        "preferred channels sms (from generic:survey:resp-20261205-1187); "
        "dropped 'pigeon' (not channels)"
    )


def test_without_a_survey_or_admin_the_preference_is_behaviour(client, core, hooks, worker):
    """A customer who never answered has the most used channels, from behaviour."""
    hooks.generic(generic_body("store_visit.json"))
    worker.drain()
    customer = context(client, email=ANN_EMAIL)["customer"]
    assert (customer["preferred_channels"], customer["preferred_channels_source"]) == (
        ["in_person"], "behaviour")  # fmt: skip


def test_the_next_tickets_note_says_the_preferred_channels(client, core, hooks, worker,
                                                           fake_zendesk):  # fmt: skip
    """Ann's next Zendesk ticket gets a note that says she prefers phone and email."""
    hooks.generic(generic_body("survey_answered.json"))
    worker.drain()
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    [note] = fake_zendesk.notes(5141)
    assert "Prefers phone, email (said in a survey)" in note["body"]


def test_an_admin_change_records_the_admin_and_keeps_the_audit_entry(
    admin_client, admin, core, hooks, worker
):
    """An admin overriding the survey makes the source admin ada, shown and audited, and an
    older survey answer arriving late does not undo it."""
    hooks.generic(generic_body("survey_answered.json"))
    worker.drain()
    ann = context(admin_client, email=ANN_EMAIL)["customer"]["id"]
    page = f"/admin/customers/{ann}"
    token = admin.csrf(admin_client.get(page).data)
    admin_client.post(f"{page}/preferred-channels", data={"csrf_token": token, "channel": "sms"})
    customer = context(admin_client, email=ANN_EMAIL)["customer"]
    assert (customer["preferred_channels"], customer["preferred_channels_source"]) == (
        ["sms"], "admin")  # fmt: skip
    assert "Preferred channels sms: set by admin ada on " in admin_client.get(page).data.decode()
    assert "customer.channels" in admin_client.get("/admin/audit/").data.decode()
    # A survey answer older than the admin's change (a late delivery) leaves it as it is.
    hooks.generic(generic_body("survey_answered.json", id="resp-late"))
    worker.drain()
    assert context(admin_client, email=ANN_EMAIL)["customer"]["preferred_channels"] == ["sms"]
    assert trail(core)[-1].endswith("preferred channels kept (set later, by admin:ada)")


def test_a_merge_keeps_the_explicit_preference(client, core, hooks, worker):
    """Folding Ann (survey answer) into Carla (none) gives Carla Ann's surveyed channels."""
    hooks.generic(generic_body("survey_answered.json"))
    hooks.generic(generic_body("store_visit__kiosk.json"))
    worker.drain()
    ann = context(client, email=ANN_EMAIL)["customer"]["id"]
    carla = context(client, phone="+14155550177")["customer"]["id"]
    with core.engine.begin() as conn:
        merge_by_admin(conn, ann, carla, "ada")
    customer = context(client, phone="+14155550177")["customer"]
    assert (customer["id"], customer["preferred_channels"]) == (carla, ["phone", "email"])
    assert customer["preferred_channels_source"] == "survey"
