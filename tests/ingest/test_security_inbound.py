"""Hostile input at the door: linear patterns, one key per object, no secret kept, no 500."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from middleware.customers.identity import normalise_email
from middleware.customers.redaction import IdFields, redact_body
from middleware.installation import build_installation
from middleware.integrations.registry import PluginRegistry
from middleware.store.tables import deliveries, interactions
from middleware.web.app import create_app
from tests.payloads import (
    cti_body,
    cti_headers,
    fixture_bytes,
    salesforce_fixture,
    twilio_fields,
    zendesk_headers,
)
from tests.values import ADMIN_PASSWORD, AGENT_KEY, CTI_SECRET, SF_ORG

IDS = IdFields(PluginRegistry.from_entry_points().id_fields())  # as the endpoint has them
TRIGGER = json.loads(fixture_bytes("trigger_ticket_created.json"))


def count(core, table=deliveries) -> int:
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def slowest_ratio(crafted: str, benign: str, run: Callable[[str], object]) -> float:
    """Time a crafted input against a benign one of the same size: best of three each."""
    assert len(crafted) == len(benign)

    def best(text: str) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            run(text)
            times.append(time.perf_counter() - started)
        return min(times)

    return best(crafted) / max(best(benign), 1e-4)


# -- 4. every pattern that sees outside input runs in linear time ----------------------------


def test_xml_redaction_is_linear_on_thousands_of_unclosed_cdata_sections():
    """8,000 unclosed CDATA openings and an escape cost about what plain text of that size does.

    The pattern this replaced looked for the end of each one again: 5 s for 72 KB.
    """
    crafted = "<a>\\u" + "<![CDATA[" * 8000 + "</a>"
    benign = "<a>\\u" + "<b>x</b>y" * 8000 + "</a>"
    ratio = slowest_ratio(crafted, benign, lambda t: redact_body(t.encode(), "text/xml", IDS))
    assert ratio < 20


def test_email_check_is_linear_on_an_address_of_dots():
    """'a@' and 16,000 dots and '@' is refused as fast as an ordinary string of that length."""
    crafted = "a@" + "." * 16000 + "@"
    benign = "a" * len(crafted)
    assert normalise_email(crafted) is None
    assert slowest_ratio(crafted, benign, normalise_email) < 20


def test_the_context_api_answers_an_email_of_dots_at_once(client):
    """/api/v1/context?email=a@…@ answers 400 quickly, not after seconds."""
    started = time.perf_counter()
    response = client.get(
        "/api/v1/context", query_string={"email": "a@" + "." * 16000 + "@"},
        headers={"Authorization": f"Bearer {AGENT_KEY}"},
    )  # fmt: skip
    assert response.status_code == 400
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    ("crafted", "benign"),
    [
        ("password" + " " * 20000 + "x", "x" * 20009),
        ("pin " * 5000, "pix " * 5000),
        ("4" + " -" * 20000, "4" + "ab" * 20000),
        ("1" * 40000, "a" * 40000),
    ],
)
def test_text_redaction_is_linear_on_crafted_text(crafted, benign):
    """Secret phrases and card runs are found in linear time on runs built to stall them."""
    body = json.dumps({"text": crafted}).encode()
    plain = json.dumps({"text": benign}).encode()
    ratio = slowest_ratio(body.decode(), plain.decode(), lambda t: redact_body(t.encode(), "", IDS))
    assert ratio < 50


def test_a_crafted_salesforce_message_is_answered_quickly(
    database_url, fake_zendesk, make_config, hooks_for
):
    """A 72 KB message with 8,000 CDATA openings in a comment is acknowledged at once.

    Well-formed XML: the pattern this replaced took each opening for an unclosed section
    and looked for its end again (3 to 5 s, with /healthz frozen meanwhile).
    """
    built = build_installation(make_config(database_url, fake_zendesk.url, salesforce={}))
    try:
        client = create_app(core=built).test_client()
        crafted = "<!-- \\u" + "<![CDATA[" * 8000 + " -->"
        body = salesforce_fixture("case_created.xml").replace(
            b"<sf:Subject>Refund not received</sf:Subject>",
            f"<sf:Subject>Refund</sf:Subject>{crafted}".encode(),
        )
        assert len(body) > 72_000
        started = time.perf_counter()
        response = hooks_for(client).salesforce(body)
        assert time.perf_counter() - started < 2
        assert response.status_code == 200
        assert client.get("/healthz").status_code == 200
    finally:
        built.dispose()


# -- 6. one key per object; links only http(s) -----------------------------------------------


def injected_trigger(description: str) -> bytes:
    """A trigger body as Zendesk renders it: the placeholder's text pasted in raw."""
    template = json.dumps(TRIGGER, indent=1).replace(
        json.dumps(TRIGGER["ticket"]["description"]), '"{{ticket.description}}"'
    )
    return template.replace("{{ticket.description}}", description).encode()


@pytest.mark.parametrize(
    "description",
    [
        'Hi", "link": "javascript:alert(document.domain)", "x": "',
        'Hi", "status": "Solved", "x": "',
        'Hi", "id": "5141", "x": "',
        'Hi"}, "event": "ticket.updated", "x": {"y": "',
    ],
)
def test_a_trigger_body_whose_text_repeats_a_key_is_refused(client, core, description, hooks):
    """A description that repeats a key of the body gets 400 and stores nothing."""
    body = injected_trigger(description)
    json.loads(body)  # valid JSON to Python's reader, with the last value winning
    response = hooks.zendesk(body)
    assert response.status_code == 400
    assert "appears twice" in response.get_json()["error"]
    assert count(core) == 0


def test_a_repeated_key_is_refused_by_every_json_endpoint(client, core):
    """CTI and Twilio JSON bodies with a repeated key get 400 too."""
    body = cti_body("newCall.json")[:-1] + b', "callId": "other"}'
    assert client.post("/hooks/cti", data=body, headers=cti_headers(body)).status_code == 400
    assert count(core) == 0


def test_a_javascript_link_in_a_payload_is_never_kept_or_shown(
    client, core, worker, hooks, fake_zendesk
):
    """A trigger's link that is not http(s) is dropped; the ticket is kept without it."""
    payload = json.loads(json.dumps(TRIGGER))
    payload["ticket"]["link"] = "javascript:alert(document.domain)"
    assert hooks.zendesk(json.dumps(payload).encode()).status_code == 200
    worker.drain()
    with core.engine.connect() as conn:
        [ticket] = conn.execute(select(interactions)).all()
    assert ticket.external_id == "5160" and ticket.link is None


@pytest.mark.parametrize(
    "link",
    ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<script>", " https://x.y",
     "vbscript:x", "//evil.example/x", "https://", "http://exa mple.com", "https://a\nb.example"],
)  # fmt: skip
def test_a_stored_link_that_is_not_http_is_never_an_href(
    admin_client, core, worker, link, hooks, fake_zendesk
):
    """Rows stored before links were checked still show without a link, on every page."""
    hooks.zendesk(fixture_bytes("trigger_ticket_created.json"))
    worker.drain()
    with core.engine.begin() as conn:
        conn.execute(interactions.update().values(link=link))
        customer = conn.execute(select(interactions.c.customer_id)).scalar()
    page = admin_client.get(f"/admin/customers/{customer}").data.decode()
    assert "5160" in page and f'href="{link}' not in page
    pop = admin_client.get("/pop", query_string={"phone": "+14155550142"},
                           headers={"Authorization": f"Bearer {AGENT_KEY}"})  # fmt: skip
    assert pop.status_code == 200 and 'href="javascript' not in pop.data.decode().lower()


# -- 7. the CTI path secret is neither stored nor shown --------------------------------------


def test_the_cti_path_token_is_not_stored_or_shown(admin_client, core):
    """A delivery to /hooks/cti/<secret> keeps no trace of the secret, stored or on its page."""
    body = cti_body("newCall.json")
    response = admin_client.post(f"/hooks/cti/{quote(CTI_SECRET, safe='')}", data=body,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 200
    with core.engine.connect() as conn:
        [row] = conn.execute(select(deliveries)).all()
    assert CTI_SECRET not in row.headers and quote(CTI_SECRET, safe="") not in row.headers
    assert json.loads(row.headers)["x-carryover-proof"] == "path token"
    page = admin_client.get(f"/admin/deliveries/in/{row.id}").data.decode()
    assert CTI_SECRET not in page and quote(CTI_SECRET, safe="") not in page
    assert "/hooks/cti/[path token]" in page


@pytest.mark.parametrize("tail", ["x", "whsec_abc", "a/b"])
def test_a_path_token_for_a_plugin_that_takes_none_is_404(client, core, tail):
    """A signed Zendesk delivery to /hooks/zendesk/<anything> gets 404 and stores nothing."""
    body = fixture_bytes("ticket_created.json")
    response = client.post(f"/hooks/zendesk/{tail}", data=body, headers=zendesk_headers(body))
    assert (response.status_code, response.get_json()) == (
        404, {"error": "integration 'zendesk' takes no token in its path"})  # fmt: skip
    assert count(core) == 0


def test_headers_named_like_credentials_are_not_stored(client, core):
    """X-Api-Key, X-Auth-Token and the like are dropped; a sender's x-carryover- headers too."""
    body = fixture_bytes("ticket_created__mail.json")
    headers = {**zendesk_headers(body), "X-Api-Key": "k-123", "X-Auth-Token": "t-456",
               "X-Carryover-Proof": "forged"}  # fmt: skip
    assert client.post("/hooks/zendesk", data=body, headers=headers).status_code == 200
    with core.engine.connect() as conn:
        stored = json.loads(conn.execute(select(deliveries.c.headers)).scalar())
    assert "k-123" not in json.dumps(stored) and "t-456" not in json.dumps(stored)
    assert stored["x-carryover-proof"] == "signature"


# -- 9. no unauthenticated 500 ----------------------------------------------------------------


def test_a_5000_digit_webhook_timestamp_is_401(client, core):
    """A CTI timestamp of 5,000 digits is refused as a bad signature, not a 500."""
    body = cti_body("newCall.json")
    headers = cti_headers(body)
    headers["webhook-timestamp"] = "9" * 5000
    response = client.post("/hooks/cti", data=body, headers=headers)
    assert response.status_code == 401 and count(core) == 0


@pytest.mark.parametrize(
    "declaration",
    ['<?xml version="1.0" encoding="x-bogus"?>', '<?xml version="1.0" encoding="utf-7"?>',
     '<?xml version="1.0" encoding="UTF-16"?>'],
)  # fmt: skip
def test_an_unknown_xml_encoding_is_400(
    database_url, fake_zendesk, declaration, make_config, hooks_for
):
    """A declaration naming an encoding Python cannot read, or a wrong one, gets 400."""
    built = build_installation(make_config(database_url, fake_zendesk.url, salesforce={}))
    try:
        body = declaration.encode() + salesforce_fixture("case_created.xml")
        response = hooks_for(create_app(core=built).test_client()).salesforce(body)
        assert response.status_code == 400 and count(built) == 0
    finally:
        built.dispose()


@pytest.mark.parametrize("path", ["/api/v1/context", "/pop", "/pop/events"])
def test_a_5000_digit_expiry_is_401(client, path):
    """exp= of 5,000 digits on a signed link is refused as unauthorised, not a 500."""
    query = {"phone": "+14155550142", "exp": "9" * 5000, "sig": "x"}
    assert client.get(path, query_string=query).status_code == 401


# -- 11. the SessionId is removed by parsing --------------------------------------------------


@pytest.mark.parametrize(
    "session_element",
    [
        "<SessionId><![CDATA[00D70000000IVNp!AQ.secret.cdata]]></SessionId>",
        "<SessionId>00D70000000IVNp&#x21;AQ.secret.ref</SessionId>",
        '<o:SessionId xmlns:o="http://soap.sforce.com/2005/09/outbound">00D!AQ.secret.ns'
        "</o:SessionId>",
        "<SessionId >00D70000000IVNp!AQ.secret.space</SessionId >",
        "<SessionId>00D<!-- c -->!AQ.secret.comment</SessionId>",
    ],
)
def test_no_spelling_of_the_session_id_reaches_the_store(database_url, fake_zendesk,
                                                         session_element, make_config,
                                                         hooks_for):  # fmt: skip
    """CDATA, character references, another prefix, spaces, comments: none survives."""
    options = {"verify_session_id": False}
    built = build_installation(make_config(database_url, fake_zendesk.url, salesforce=options))
    try:
        body = salesforce_fixture("case_created.xml").replace(
            b'<SessionId xsi:nil="true"/>', session_element.encode()
        )
        response = hooks_for(create_app(core=built).test_client()).salesforce(body)
        assert response.status_code == 200
        with built.engine.connect() as conn:
            stored = bytes(conn.execute(select(deliveries.c.body)).scalar())
        assert b"secret" not in stored and b"AQ." not in stored
        assert b"Refund not received" in stored  # the rest of the message is kept
    finally:
        built.dispose()


# -- 12. stored oddities are validated at the mapping, and pages never 500 --------------------


@pytest.mark.parametrize(
    "changes",
    [{"Timestamp": "²"}, {"CallDuration": "1e400"}, {"CallDuration": "-5"},
     {"CallDuration": "NaN"}, {"Timestamp": "9" * 30}, {"Timestamp": "Mon, 99 Zzz 99999"}],
)  # fmt: skip
def test_odd_twilio_values_end_as_a_clear_dead_letter_or_a_clean_call(admin_client, core,
                                                                      worker, changes,
                                                                      hooks):  # fmt: skip
    """An odd value is a mapping error naming the field (or cleaned), never a crash."""
    fields = twilio_fields("call_ended__completed.form", **changes)
    response = hooks.twilio(fields)
    if response.status_code == 400:  # refused at the door: fine, nothing stored
        assert count(core) == 0
        return
    worker.drain()
    with core.engine.connect() as conn:
        [row] = conn.execute(select(deliveries)).all()
    assert row.status in ("done", "dead")
    if row.status == "dead":
        assert row.last_error.startswith("events.") or ": " in row.last_error
        assert not row.last_error.startswith(("ValueError", "OverflowError", "TypeError"))
    assert admin_client.get(f"/admin/deliveries/in/{row.id}").status_code == 200
    assert admin_client.get("/admin/").status_code == 200
    assert admin_client.get("/admin/deliveries/").status_code == 200


@pytest.mark.parametrize("ticket_id", ["inf", "1e5", "5141/../../users/me", "١٢", "-1", "0", ""])
def test_a_ticket_id_that_is_not_a_zendesk_id_is_refused(client, core, ticket_id, hooks):
    """detail.id must be a positive integer: anything else gets 400 and is not stored."""
    payload = json.loads(fixture_bytes("ticket_created__mail.json"))
    payload["detail"]["id"] = ticket_id
    assert hooks.zendesk(json.dumps(payload).encode()).status_code == 400
    assert count(core) == 0


def test_a_lone_surrogate_in_a_subject_is_stored_cleaned(
    admin_client, core, worker, hooks, fake_zendesk
):
    """A JSON escape for half a character becomes a replacement mark, not a store error."""
    text = fixture_bytes("ticket_created__mail.json").decode()
    body = text.replace("Charged twice for my January invoice", "Charged \\ud800 twice").encode()
    assert hooks.zendesk(body).status_code == 200
    worker.drain()
    with core.engine.connect() as conn:
        [ticket] = conn.execute(select(interactions)).all()
    assert ticket.subject == "Charged ? twice"
    assert admin_client.get(f"/admin/customers/{ticket.customer_id}").status_code == 200


def test_the_admin_login_page_and_overview_stand_odd_deliveries(
    database_url, fake_zendesk, make_config, admin_for, hooks_for
):
    """A refused and an odd delivery leave every admin page answering 200."""
    from middleware.admin.accounts import create_admin

    built = build_installation(make_config(database_url, fake_zendesk.url, phone=True))
    try:
        client = create_app(core=built).test_client()
        create_admin(built.engine, "ada", ADMIN_PASSWORD)
        admin_for(client).log_in()
        hooks_for(client).twilio(twilio_fields("call_ended__completed.form", CallDuration="1e400"))
        for page in ("/admin/", "/admin/deliveries/", "/admin/deliveries/in/1",
                     "/admin/integrations/", "/admin/customers/"):  # fmt: skip
            assert client.get(page).status_code == 200, page
    finally:
        built.dispose()


def test_the_salesforce_org_of_the_fixtures_is_the_test_org():
    """The fixtures speak for the test org (a guard for the tests above)."""
    assert SF_ORG.encode() in salesforce_fixture("case_created.xml")
