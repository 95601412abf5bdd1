"""Salesforce: Outbound Messages in (SOAP, org check, Ack), private case comments out."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
import responses
from defusedxml.ElementTree import fromstring
from sqlalchemy import func, select, update

from middleware.config import ConfigError
from middleware.installation import Installation, build_installation
from middleware.notes.outbox import MARKER_PATTERN
from middleware.store.queue import PENDING
from middleware.store.tables import deliveries, identities, interactions, utcnow, writes
from plugins.salesforce.outbound import ACK, OUTBOUND_NS, SOAP_NS
from tests.payloads import fixture_bytes, outbound_message, salesforce_fixture, twilio_fields
from tests.values import AGENT_KEY, SF_INSTANCE, SF_ORG

REST = f"{SF_INSTANCE}/services/data/v59.0"
CASE = "5007000000OFL5FAAX"
CONTACT_ID = "0037000000xicp7AAA"
# The Salesforce contact behind the fixtures' cases: the same person as Zendesk's Ann.
CONTACT = {
    "attributes": {"type": "Contact", "url": f"/services/data/v59.0/sobjects/Contact/{CONTACT_ID}"},
    "Id": CONTACT_ID,
    "Name": "Ann Example",
    "Email": "ann.example@example.com",
    "Phone": "(415) 555-0142",
    "MobilePhone": None,
}
LIMIT_INFO = {"Sforce-Limit-Info": "api-usage=25/15000"}
CREATED = {"id": "00a7000000AbCdEAAV", "success": True, "errors": []}
LIMIT_EXCEEDED = [
    {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
]
EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
# The session the web-to-case fixture carries, taken by the org's API as one of its own.
FIXTURE_SESSION = "00D70000000IVNp!AQ4AQFakeSessionForFixtureOnly0123456789"
ORGANIZATION = {"totalSize": 1, "done": True, "records": [
    {"attributes": {"type": "Organization"}, "Id": "00D70000000IVNpEAO"}]}  # fmt: skip


def organization_query(rsps, session: str, **reply) -> None:
    """Answer the query a SessionId is checked with, for that session only."""
    rsps.get(
        f"{REST}/query/",
        match=[
            responses.matchers.query_param_matcher({"q": "SELECT Id FROM Organization"}),
            responses.matchers.header_matcher({"Authorization": f"Bearer {session}"}),
        ],
        **(reply or {"json": ORGANIZATION}),
    )


@pytest.fixture
def sf_api() -> Iterator[responses.RequestsMock]:
    """Intercept the Salesforce REST API (the fake Zendesk on 127.0.0.1 stays real)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        rsps.get(f"{REST}/sobjects/Contact/{CONTACT_ID}", json=CONTACT, headers=LIMIT_INFO)
        rsps.post(f"{REST}/sobjects/CaseComment/", json=CREATED, status=201, headers=LIMIT_INFO)
        organization_query(rsps, FIXTURE_SESSION)
        yield rsps


@pytest.fixture
def core(database_url, fake_zendesk, sf_api, make_config) -> Iterator[Installation]:
    """Build an installation with Zendesk, Salesforce (session id login) and the phone."""
    built = build_installation(
        make_config(database_url, fake_zendesk.url, phone=True, salesforce={})
    )
    yield built
    built.dispose()


def count(core, table) -> int:
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def cases(core) -> list:
    with core.engine.connect() as conn:
        query = select(interactions).where(interactions.c.kind == "case")
        return conn.execute(query.order_by(interactions.c.id)).all()


def comment_posts(sf_api) -> list[dict]:
    """Return the JSON bodies of every CaseComment creation sent to Salesforce."""
    return [
        json.loads(call.request.body)
        for call in sf_api.calls
        if call.request.method == "POST" and "/sobjects/CaseComment/" in call.request.url
    ]


def is_ack(response) -> bool:
    return response.status_code == 200 and response.data == ACK


# -- receiving: the envelope, the org, the Ack -----------------------------------------------


def test_one_notification_gets_the_exact_ack_and_becomes_a_case(
    client, worker, core, sf_api, hooks
):
    """A case notification is answered with the exact Ack and maps to an enriched case."""
    response = hooks.salesforce(salesforce_fixture("case_created.xml"))
    assert is_ack(response)
    assert response.content_type == "text/xml; charset=utf-8"
    root = fromstring(response.data)
    assert root.find(f"{{{SOAP_NS}}}Body/{{{OUTBOUND_NS}}}notificationsResponse/"
                     f"{{{OUTBOUND_NS}}}Ack").text == "true"  # fmt: skip
    worker.drain()
    [case] = cases(core)
    assert (case.source, case.external_id, case.channel, case.status) == (
        "salesforce", CASE, "phone", "new")  # fmt: skip
    assert case.subject == "Refund not received"
    assert case.customer_name == "Ann Example"
    assert case.link == f"{SF_INSTANCE}/{CASE}"  # the configured instance, not the message's
    with core.engine.connect() as conn:
        found = {(r.type, r.value) for r in conn.execute(select(identities))}
    assert {("salesforce_contact", CONTACT_ID), ("email", "ann.example@example.com"),
            ("phone", "+14155550142")} <= found  # fmt: skip


@pytest.mark.parametrize(
    ("configured", "sent"),
    [
        ("00D70000000IVNp", "00D70000000IVNpEAO"),
        ("00D70000000IVNpEAO", "00D70000000IVNp"),
        ("00D70000000IVNpEAO", "00D70000000IVNpEAO"),
    ],
)
def test_org_ids_match_in_their_15_and_18_character_forms(
    database_url, fake_zendesk, sf_api, configured, sent, make_config, hooks_for
):
    """The configured org and the message's org match on their first 15 characters."""
    from middleware.web.app import create_app

    config = make_config(database_url, fake_zendesk.url, salesforce={"organization_id": configured})
    built = build_installation(config)
    try:
        body = salesforce_fixture("case_created.xml").replace(b"00D70000000IVNpEAO", sent.encode())
        assert is_ack(hooks_for(create_app(core=built).test_client()).salesforce(body))
        assert count(built, deliveries) == 1
    finally:
        built.dispose()


def test_another_org_is_refused_with_a_soap_fault_and_nothing_stored(client, core, hooks):
    """A message from another org gets 401 and a soapenv:Client Fault; nothing is kept."""
    body = salesforce_fixture("case_created.xml").replace(b"IVNpEAO", b"IVNqEAO")
    response = hooks.salesforce(body)
    assert response.status_code == 401
    assert response.content_type.startswith("text/xml")
    fault = fromstring(response.data).find(f"{{{SOAP_NS}}}Body/{{{SOAP_NS}}}Fault")
    assert fault.findtext("faultcode") == "soapenv:Client"
    assert "00D70000000IVNqEAO" in fault.findtext("faultstring")
    assert count(core, deliveries) == 0


def test_an_org_id_that_differs_only_in_case_is_refused(client, core, hooks):
    """Org ids are case-sensitive: 00D70000000IVNP is another org than 00D70000000IVNp."""
    body = salesforce_fixture("case_created.xml").replace(b"IVNpEAO", b"IVNPEAO")
    assert hooks.salesforce(body).status_code == 401
    assert count(core, deliveries) == 0


def test_a_batch_of_100_notifications_is_one_ack_and_100_cases(client, worker, core, sf_api, hooks):
    """Salesforce batches up to 100 notifications: one Ack, every case kept."""
    assert is_ack(hooks.salesforce(outbound_message("case_created.xml", 100)))
    assert count(core, deliveries) == 1
    worker.drain()
    assert len(cases(core)) == 100
    contact_gets = [c for c in sf_api.calls if "/sobjects/Contact/" in c.request.url]
    assert len(contact_gets) == 1  # one contact behind them all: looked up once, then cached


@pytest.mark.parametrize("notifications", [0, 101])
def test_a_message_with_no_or_too_many_notifications_is_refused(client, core, notifications, hooks):
    """Outbound Messages carry 1 to 100 notifications; anything else is a 400 with a reason."""
    body = outbound_message("case_created.xml", max(notifications, 1))
    if notifications == 0:
        body = re.sub(rb"<Notification>.*</Notification>", b"", body, flags=re.DOTALL)
    response = hooks.salesforce(body)
    assert response.status_code == 400
    assert "1 to 100 Notification" in response.get_json()["error"]
    assert count(core, deliveries) == 0


def test_session_id_nil_and_a_sent_session_id_both_work_and_the_session_is_never_stored(
    client, worker, core, hooks
):
    """A nil SessionId is fine, and a real one (a live credential) never reaches the store."""
    assert is_ack(hooks.salesforce(salesforce_fixture("case_created.xml")))
    with_session = salesforce_fixture("case_created__web_to_case.xml")
    assert b"FakeSessionForFixtureOnly" in with_session
    assert is_ack(hooks.salesforce(with_session))
    with core.engine.connect() as conn:
        bodies = [bytes(r.body) for r in conn.execute(select(deliveries.c.body))]
    assert len(bodies) == 2
    assert not any(b"FakeSessionForFixtureOnly" in b for b in bodies)
    worker.drain()
    assert len(cases(core)) == 2


def test_web_to_case_fields_link_the_supplied_email_and_phone(client, worker, core, hooks):
    """SuppliedEmail and SuppliedPhone of a web-to-case case are the customer's identifiers."""
    hooks.salesforce(salesforce_fixture("case_created__web_to_case.xml"))
    worker.drain()
    [case] = cases(core)
    assert (case.channel, case.customer_name) == ("web", "Ann Lee")
    assert case.text == "Invoice INV-2201 charged twice & no reply to my email."
    with core.engine.connect() as conn:
        found = {(r.type, r.value) for r in conn.execute(select(identities))}
    assert found == {("email", "ann.lee@example.com"), ("phone", "+14155550142")}


def test_duplicate_notifications_are_acknowledged_and_cause_nothing(
    client, worker, core, sf_api, hooks
):
    """The same Notification/Id again gets the Ack, stores nothing and writes nothing new."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    body = salesforce_fixture("case_created.xml")
    assert is_ack(hooks.salesforce(body))
    worker.drain()
    assert is_ack(hooks.salesforce(body))
    worker.drain()
    assert count(core, deliveries) == 2  # the ticket and the case, once each
    assert len(comment_posts(sf_api)) == 1


def test_a_batch_repeating_some_notifications_keeps_only_the_new_ones(client, worker, core, hooks):
    """A retried batch that overlaps an earlier one keeps only the unseen notifications."""
    hooks.salesforce(outbound_message("case_created.xml", 3))
    assert is_ack(hooks.salesforce(outbound_message("case_created.xml", 5)))
    with core.engine.connect() as conn:
        keys = [json.loads(r.event_keys) for r in conn.execute(select(deliveries))]
    assert [len(k) for k in keys] == [3, 2]
    worker.drain()
    assert len(cases(core)) == 5


@pytest.mark.parametrize(
    "body",
    [
        # XXE: an external entity that would read a local file.
        b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<soapenv:Body>&xxe;</soapenv:Body></soapenv:Envelope>",
        # Billion laughs: ten levels of ten-fold entity expansion (10^10 "lol"s).
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(
            f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
            for i in range(1, 10)
        )
        + b"]><notifications>&lol9;</notifications>",
        # A DTD alone, even without entities.
        b'<?xml version="1.0"?><!DOCTYPE notifications SYSTEM "http://example.com/x.dtd">'
        b"<notifications/>",
    ],
    ids=["xxe", "billion-laughs", "external-dtd"],
)
def test_xml_with_a_dtd_or_entities_is_refused_before_anything_is_expanded(
    client, core, body, hooks
):
    """XXE and entity-expansion bombs get a 400 at the parser's first DOCTYPE; nothing is kept."""
    response = hooks.salesforce(body)
    assert response.status_code == 400
    assert "DTD" in response.get_json()["error"]
    assert count(core, deliveries) == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not xml at all", "not well-formed XML"),
        (b'{"OrganizationId": "00D70000000IVNp"}', "not well-formed XML"),
        (b"<Envelope/>", "expected a SOAP 1.1 Envelope"),
        (b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
         b"<soapenv:Body/></soapenv:Envelope>", "notifications: missing"),
        (b"<a>\xff\xfe</a>", "not well-formed XML"),
    ],
    ids=["text", "json", "no-soap", "no-notifications", "bad-bytes"],
)  # fmt: skip
def test_malformed_messages_get_400_with_the_reason(client, core, body, reason, hooks):
    """A body that is not an Outbound Message gets 400 saying what is wrong."""
    response = hooks.salesforce(body)
    assert response.status_code == 400
    assert reason in response.get_json()["error"]
    assert count(core, deliveries) == 0


def test_a_notification_without_organization_or_ids_is_refused(client, core, hooks):
    """OrganizationId, Notification/Id and sObject/Id are required."""
    fixture = salesforce_fixture("case_created.xml")
    for pattern, reason in (
        (rb"<OrganizationId>\w+</OrganizationId>", "OrganizationId: missing"),
        (rb"<Id>04l\w+</Id>", "Notification[1]/Id: missing"),
        (rb"<sf:Id>\w+</sf:Id>", "sObject/Id: missing"),
    ):
        response = hooks.salesforce(re.sub(pattern, b"", fixture))
        assert response.status_code == 400, reason
        assert reason in response.get_json()["error"]
    assert count(core, deliveries) == 0


def test_an_unused_record_type_is_acknowledged_so_salesforce_stops_retrying(client, core, hooks):
    """An Account notification gets the Ack (anything else is retried for a day), not stored."""
    body = salesforce_fixture("contact_changed.xml").replace(b'"sf:Contact"', b'"sf:Account"')
    response = hooks.salesforce(body)
    assert is_ack(response)
    assert response.headers["X-Carryover-Ignored"] == "account.changed"
    assert count(core, deliveries) == 0


# -- mapping: statuses, contacts, comments ---------------------------------------------------


def test_a_closed_case_stops_being_an_open_item(client, worker, core, hooks):
    """A later notification with IsClosed true closes the case, whatever its status is called."""
    hooks.salesforce(salesforce_fixture("case_created.xml"))
    worker.drain()
    later = (utcnow() + timedelta(minutes=1)).isoformat(timespec="milliseconds") + "Z"
    hooks.salesforce(outbound_message("case_updated__closed.xml", LastModifiedDate=later))
    worker.drain()
    [case] = cases(core)
    assert case.status == "closed"
    response = client.get("/api/v1/context?email=ann.example@example.com",
                          headers={"Authorization": "Bearer agent-key-for-tests"})  # fmt: skip
    assert response.get_json()["open_items"] == []


def test_an_edit_long_after_creation_is_an_update_and_writes_no_note(
    client, worker, core, sf_api, hooks
):
    """A notification sent for an edit (LastModifiedDate well after CreatedDate) adds no note."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    edited = outbound_message("case_created.xml", CreatedDate="2025-02-01T10:00:00.000Z",
                              LastModifiedDate="2025-02-04T16:45:12.000Z")  # fmt: skip
    hooks.salesforce(edited)
    worker.drain()
    assert len(cases(core)) == 1
    assert comment_posts(sf_api) == []


def test_a_contact_notification_links_its_email_and_phones_as_one_customer(
    client, worker, core, hooks
):
    """Contact fields are a trusted record: the email, phone and mobile join one customer."""
    assert is_ack(hooks.salesforce(salesforce_fixture("contact_changed.xml")))
    worker.drain()
    with core.engine.connect() as conn:
        rows = conn.execute(select(identities)).all()
    assert {(r.type, r.value) for r in rows} == {
        ("salesforce_contact", CONTACT_ID), ("email", "ann.lee@example.com"),
        ("phone", "+14155550142"), ("phone", "+14155550199"),
    }  # fmt: skip
    assert len({r.customer_id for r in rows}) == 1
    assert {r.caused_by for r in rows} == {f"salesforce:contact:{CONTACT_ID}"}
    assert cases(core) == []  # a contact is who someone is, not a contact with them


def test_a_customer_comment_joins_the_case_thread(client, worker, core, hooks):
    """A CaseComment notification is a note in its case's thread, of the case's customer."""
    hooks.salesforce(salesforce_fixture("case_created.xml"))
    hooks.salesforce(salesforce_fixture("casecomment_created.xml"))
    worker.drain()
    with core.engine.connect() as conn:
        [note] = conn.execute(select(interactions).where(interactions.c.kind == "note")).all()
    assert note.external_id == f"{CASE}#00a7000000AbCdEAAV"
    assert note.customer_id == cases(core)[0].customer_id


def test_own_case_comment_coming_back_causes_nothing(client, core, written_before, hooks):
    """A CaseComment carrying a marker Carryover wrote on that case is acknowledged, ignored."""
    written_before("salesforce", "5007000000OFL6GAAX", "co-12-summary")
    response = hooks.salesforce(salesforce_fixture("casecomment_created__own_comment.xml"))
    assert is_ack(response)
    assert response.headers["X-Carryover-Ignored"] == "own note"
    assert count(core, deliveries) == 0


# -- writing back: one private CaseComment ---------------------------------------------------


def test_new_case_of_a_zendesk_customer_gets_one_private_comment_naming_the_ticket(
    client, worker, core, sf_api, fake_zendesk, hooks
):
    """After a Zendesk ticket, a new case of the same email gets one CaseComment about it,
    and the next Zendesk ticket gets a note naming the case."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    assert is_ack(hooks.salesforce(salesforce_fixture("case_created.xml")))
    worker.drain()

    [comment] = comment_posts(sf_api)
    assert comment["ParentId"] == CASE
    assert comment["IsPublished"] is False
    marker = MARKER_PATTERN.search(comment["CommentBody"]).group(0)
    assert comment["CommentBody"] == (
        "Ann Example\n"
        "Open:\n"
        "- #5141 · new · Charged twice for my January invoice · "
        f"{fake_zendesk.url}/agent/tickets/5141\n"
        '  "Hi, I was charged twice for invoice INV-2025-001. Card [card ending 1111] shows '
        'two payments. Please refund one."\n'
        "Mood: negative\n"
        "Recognised by email, phone and facebook\n"
        "\n"
        f"{marker}"
    )

    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()
    [note] = fake_zendesk.notes(5149)
    case_line = next(line for line in note["body"].splitlines() if "Refund not received" in line)
    assert case_line.startswith("- case")
    assert f"{SF_INSTANCE}/lightning/r/Case/{CASE}/view" in case_line
    assert CASE not in case_line.replace(f"/Case/{CASE}/", "")  # the raw id only in the link


def test_own_comment_echoed_by_a_case_update_writes_nothing_more(
    client, worker, core, sf_api, hooks
):
    """Our comment touches the case; the case's update notification causes no second write."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.salesforce(salesforce_fixture("case_created.xml"))
    worker.drain()
    touched = outbound_message("case_created.xml", CreatedDate="2025-02-01T10:00:00.000Z",
                               LastModifiedDate="2025-02-01T10:05:00.000Z")  # fmt: skip
    hooks.salesforce(touched.replace(b"<Id>04l7", b"<Id>04l8"))
    worker.drain()
    assert len(comment_posts(sf_api)) == 1


def test_a_long_summary_is_cut_to_4000_bytes_at_a_line_with_its_marker(
    client, worker, core, sf_api, hooks
):
    """A comment over 4,000 bytes of UTF-8 is cut at a line break and keeps its marker."""
    long_subject = "Überweisung fehlgeschlagen — " + "ä" * 150
    for i in range(12):
        hooks.zendesk(json.dumps({
            **json.loads(fixture_bytes("ticket_created__mail.json")),
            "id": f"event-{i}",
            "detail": {**json.loads(fixture_bytes("ticket_created__mail.json"))["detail"],
                       "id": str(6000 + i), "subject": f"{i} {long_subject}"},
        }).encode())  # fmt: skip
    worker.drain()
    hooks.salesforce(salesforce_fixture("case_created.xml"))
    worker.drain()
    [comment] = comment_posts(sf_api)
    body = comment["CommentBody"]
    assert len(body.encode("utf-8")) <= 4000
    assert body.endswith("]") and MARKER_PATTERN.search(body.splitlines()[-1])
    assert "shortened to fit" in body
    kept = body.split("\n[… shortened")[0]
    # The cut falls between lines: every recent-contact line kept is whole.
    assert all(line.endswith("ä" * 150) or "zendesk ticket" not in line
               for line in kept.splitlines())  # fmt: skip


def test_an_ended_call_is_noted_on_the_open_case(client, worker, core, sf_api, hooks):
    """When a call of the case's customer ends, the open case gets a short private comment."""
    hooks.salesforce(salesforce_fixture("case_created.xml"))
    worker.drain()
    for name in ("call_started__ringing.form", "call_ended__completed.form"):
        fields = twilio_fields(name, From="+14155550142")
        assert hooks.twilio(fields).status_code == 200
    worker.drain()
    [comment] = comment_posts(sf_api)
    assert comment["ParentId"] == CASE
    assert comment["CommentBody"].startswith("Phone call")
    assert comment["IsPublished"] is False


# -- limits, sessions, errors ----------------------------------------------------------------


def test_request_limit_exceeded_backs_off_and_nothing_is_lost(client, worker, core, sf_api, hooks):
    """403 REQUEST_LIMIT_EXCEEDED puts the write back for limit_backoff_s, then it is written."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    sf_api.replace(responses.POST, f"{REST}/sobjects/CaseComment/", json=LIMIT_EXCEEDED,
                   status=403, headers={"Sforce-Limit-Info": "api-usage=15001/15000"})  # fmt: skip
    hooks.salesforce(salesforce_fixture("case_created.xml"))
    worker.drain()
    with core.engine.connect() as conn:
        [write] = conn.execute(select(writes)).all()
    assert write.status == PENDING and write.attempts == 0
    assert "REQUEST_LIMIT_EXCEEDED" in write.last_error
    wait = (write.next_attempt_at - utcnow()).total_seconds()
    assert 800 < wait <= 900  # limit_backoff_s defaults to 15 minutes
    assert len(comment_posts(sf_api)) == 1

    readyz = client.get("/readyz").get_json()
    assert readyz["upstreams"]["salesforce"]["api_usage"] == "15001/15000"

    # The allocation frees up: the write is due again and goes through, once.
    sf_api.replace(responses.POST, f"{REST}/sobjects/CaseComment/", json=CREATED, status=201,
                   headers={"Sforce-Limit-Info": "api-usage=14000/15000"})  # fmt: skip
    core.health.resume("salesforce")
    with core.engine.begin() as conn:
        conn.execute(update(writes).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    worker.drain()
    assert len(comment_posts(sf_api)) == 2
    with core.engine.connect() as conn:
        assert conn.execute(select(writes.c.status)).scalar() == "done"
    assert client.get("/readyz").get_json()["upstreams"]["salesforce"]["api_usage"] == (
        "14000/15000"
    )


def test_while_the_allocation_is_used_up_no_call_is_made(client, worker, core, sf_api, hooks):
    """After REQUEST_LIMIT_EXCEEDED, other work waits without calling Salesforce again."""
    sf_api.replace(responses.GET, f"{REST}/sobjects/Contact/{CONTACT_ID}", json=LIMIT_EXCEEDED,
                   status=403)  # fmt: skip
    hooks.salesforce(outbound_message("case_created.xml", 1))
    worker.drain()
    hooks.salesforce(outbound_message("case_created.xml", 1).replace(b"04l7", b"04l8"))
    worker.drain()
    assert len([c for c in sf_api.calls if "/Contact/" in c.request.url]) == 1
    with core.engine.connect() as conn:
        rows = conn.execute(select(deliveries)).all()
    assert [r.status for r in rows] == [PENDING, PENDING]
    assert all(r.attempts == 0 for r in rows)


def test_readyz_shows_the_last_api_usage(client, worker, core, hooks):
    """/readyz reports the Sforce-Limit-Info usage of the last Salesforce reply."""
    before = client.get("/readyz").get_json()["upstreams"]["salesforce"]
    assert before["state"] == "ok" and "api_usage" not in before
    hooks.salesforce(salesforce_fixture("case_created.xml"))
    worker.drain()
    usage = client.get("/readyz").get_json()["upstreams"]["salesforce"]
    assert usage["api_usage"] == "25/15000"
    assert usage["share_used"] == pytest.approx(25 / 15000, abs=1e-4)


def test_an_expired_session_id_is_retried_later_with_a_clear_error(
    client, worker, core, sf_api, hooks
):
    """A refused session_id cannot be renewed: the delivery waits and says what to do."""
    sf_api.replace(responses.GET, f"{REST}/sobjects/Contact/{CONTACT_ID}", json=EXPIRED,
                   status=401)  # fmt: skip
    hooks.salesforce(salesforce_fixture("case_created.xml"))
    worker.run_once()
    with core.engine.connect() as conn:
        row = conn.execute(select(deliveries)).one()
    assert row.status == PENDING and row.attempts == 1
    assert "set a fresh one" in row.last_error


def test_a_deleted_case_makes_the_comment_a_dead_letter(client, worker, core, sf_api, hooks):
    """INVALID_CROSS_REFERENCE_KEY (the case is gone) is permanent: a dead letter, no retry."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    gone = [{"message": "invalid cross reference id", "errorCode": "INVALID_CROSS_REFERENCE_KEY",
             "fields": ["ParentId"]}]  # fmt: skip
    sf_api.replace(responses.POST, f"{REST}/sobjects/CaseComment/", json=gone, status=400)
    hooks.salesforce(salesforce_fixture("case_created.xml"))
    worker.drain()
    with core.engine.connect() as conn:
        write = conn.execute(select(writes)).one()
    assert write.status == "dead"
    assert "INVALID_CROSS_REFERENCE_KEY" in write.last_error


def test_a_write_that_may_have_happened_is_checked_before_it_is_retried(
    client, worker, core, sf_api, hooks
):
    """A comment cut off mid-request is looked up by its marker and not written twice."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    sf_api.replace(responses.POST, f"{REST}/sobjects/CaseComment/",
                   body=requests.ConnectionError("connection reset"))  # fmt: skip
    hooks.salesforce(salesforce_fixture("case_created.xml"))
    worker.run_once()
    with core.engine.connect() as conn:
        write = conn.execute(select(writes)).one()
    assert write.status == "attempting"
    # It had reached Salesforce after all: the query finds it, so no second POST.
    sf_api.get(re.compile(rf"{re.escape(REST)}/query/\?q=.*"), json={
        "totalSize": 1, "done": True,
        "records": [{"attributes": {"type": "CaseComment"}, "Id": "00a7000000AbCdEAAV",
                     "CommentBody": write.body}],
    })  # fmt: skip
    grace = timedelta(seconds=core.config.worker["unknown_outcome_grace_s"] + 1)
    with core.engine.begin() as conn:  # after the grace (Salesforce may apply it late)
        conn.execute(update(writes).values(next_attempt_at=utcnow() - timedelta(seconds=1),
                                           attempted_at=utcnow() - grace))  # fmt: skip
    core.health.resume("salesforce")
    worker.drain()
    posts = [c for c in sf_api.calls if c.request.method == "POST"]
    assert len(posts) == 1
    query = [c for c in sf_api.calls if "/query/" in c.request.url][0].request.url
    assert "ParentId" in query and CASE in query
    with core.engine.connect() as conn:
        assert conn.execute(select(writes.c.status)).scalar() == "done"


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"organization_id": "00D12"}, "organization_id: expected a 15- or 18-character"),
        ({"organization_id": "001000000000001"}, "starting 00D"),
        ({"session_id": None, "instance_url": None}, "configure a login"),
        ({"session_id": None, "username": "bot@example.com"}, "configure a login"),
        ({"session_id": None, "username": "bot@example.com", "consumer_key": "3MVG9"},
         "private_key: required"),
    ],
)  # fmt: skip
def test_a_bad_org_id_or_missing_login_stops_the_start_naming_the_key(
    database_url, options, message, make_config
):
    """Configuration errors name the key: a malformed org id, or no complete login."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_installation(make_config(database_url, salesforce=options))


def test_the_shipped_org_id_of_the_fixtures_is_the_tests_org():
    """The fixtures come from the org the tests configure (15 characters of it)."""
    assert b"<OrganizationId>" + SF_ORG.encode() in salesforce_fixture("case_created.xml")


# -- whose words: only the customer's own texts are what they already said -------------------


@pytest.mark.parametrize(("origin", "said_by"), [("Phone", "agent"), ("Email", "customer")])
def test_only_the_customers_own_words_are_what_they_already_said(
    client, worker, core, sf_api, hooks, origin, said_by
):
    """A phone case's Description is an agent's and stays out of `said`; an email case's is in.

    Ann's Zendesk mail (her description) and her SMS are hers whatever the case.
    """
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.twilio(twilio_fields("message_received.form"))
    description = "Refund one of the two charges of INV-2025-001."
    hooks.salesforce(outbound_message("case_created.xml", Origin=origin, Description=description))
    worker.drain()
    [case] = cases(core)
    assert (case.text, case.said_by, case.number) == (description, said_by, "00001026")
    response = client.get(
        "/api/v1/context",
        query_string={"email": "ann.example@example.com"},
        headers={"Authorization": f"Bearer {AGENT_KEY}"},
    )
    said = [s["text"] for s in response.get_json()["said"]]
    assert any(t.startswith("Hi, it's Ann again") for t in said)  # her SMS
    assert any(t.startswith("Hi, I was charged twice") for t in said)  # her Zendesk mail
    assert (description in said) == (said_by == "customer")
