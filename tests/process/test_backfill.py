"""Importing history: past tickets, cases and calls go through the pipeline with no note,
resume where they stopped, never import twice, and count what they could not import."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from middleware.config import ConfigError
from middleware.errors import PermanentUpstreamError
from middleware.installation import Installation, build_installation
from middleware.process import backfill
from middleware.process.backfill import (
    DONE,
    STOPPED,
    HistoryImport,
    ImportBusy,
    ImportState,
    parse_since,
)
from middleware.process.worker import Worker
from middleware.store.tables import (
    customers,
    history_imports,
    identities,
    interactions,
    utcnow,
    writes,
)
from middleware.web.app import create_app
from tests.payloads import zendesk_event, zendesk_headers
from tests.values import ANN, PLUGINS_DIR, SF_INSTANCE

ZD = "https://acme.zendesk.example"
TW = "https://api.twilio.example"
TW_SID = "AC0123456789abcdef0123456789abcdef"
EXPORT = f"{ZD}/api/v2/incremental/tickets/cursor.json"
SHOW_MANY = f"{ZD}/api/v2/users/show_many.json"
SF_QUERY = f"{SF_INSTANCE}/services/data/v59.0/query/"
SF_LIMITS = f"{SF_INSTANCE}/services/data/v59.0/limits/"
CALLS = f"{TW}/2010-04-01/Accounts/{TW_SID}/Calls.json"
SINCE = datetime(2025, 12, 6)
LEE = 8447388090777


def history_fixture(key: str, name: str) -> dict[str, Any]:
    """Return a page of past records as the vendor's API sends it (plugins/<key>/fixtures)."""
    page: dict[str, Any] = json.loads(
        (PLUGINS_DIR / key / "fixtures" / "history" / name).read_bytes()
    )
    return page


ZENDESK_PAGE = history_fixture("zendesk", "incremental_tickets_cursor.json")
CASES_PAGE = history_fixture("salesforce", "query_cases.json")
CALLS_PAGE = history_fixture("twilio", "calls_list.json")
ANN_USERS = {
    "users": [ZENDESK_PAGE["users"][0]],
    "identities": [
        {"id": 1, "user_id": ANN, "type": "email", "value": "ann.example@example.com"},
        {"id": 2, "user_id": ANN, "type": "twitter", "value": "annexample"},
    ],
    "next_page": None,
    "previous_page": None,
    "count": 1,
}


@pytest.fixture
def core(database_url: str, make_config: Any) -> Iterator[Installation]:
    """Connect Zendesk, Salesforce and Twilio at addresses the `api` mock answers."""
    config = make_config(
        database_url, ZD, zendesk_options={"export_requests_per_minute": 0}, phone=True,
        twilio={"account_sid": TW_SID, "api_url": TW}, salesforce={},
    )  # fmt: skip
    built = build_installation(config)
    yield built
    built.dispose()


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    """Answer the vendors' APIs; a request nothing answers fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def import_history(core: Installation, key: str, **kwargs: Any) -> ImportState:
    """Run one integration's import since SINCE and return how it ended."""
    return HistoryImport(core, core.registry.instances[key], SINCE, **kwargs).run()


def rows(core: Installation, table: Any = interactions) -> list[Any]:
    """Return a table's rows, oldest first."""
    with core.engine.connect() as conn:
        return list(conn.execute(select(table).order_by(table.c.id)))


def count(core: Installation, table: Any) -> int:
    """Count a table's rows."""
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def post_zendesk(core: Installation, body: bytes) -> int:
    """Post a signed Zendesk webhook to the installation; return the status."""
    client = create_app(core=core).test_client()
    return client.post("/hooks/zendesk", data=body, headers=zendesk_headers(body)).status_code


def export_page(tickets: list[dict[str, Any]], cursor: str, end: bool) -> dict[str, Any]:
    """Return an export page of the given tickets, with Ann and Lee side-loaded."""
    page = copy.deepcopy(ZENDESK_PAGE)
    page.update(tickets=tickets, after_cursor=cursor, end_of_stream=end)
    page["after_url"] = f"{EXPORT}?cursor={cursor}"
    return page


def asked(api: responses.RequestsMock, url: str) -> list[dict[str, list[str]]]:
    """Return the query parameters of each request made to a URL's path (zenpy's requests
    show the placeholder host they were rebased from)."""
    path = urlsplit(url).path
    found = [urlsplit(str(c.request.url)) for c in api.calls]
    return [parse_qs(parts.query) for parts in found if parts.path == path]


# -- Zendesk ---------------------------------------------------------------------------------


def test_zendesk_tickets_are_imported_with_channel_status_words_and_identities(core, api):
    """Each exported ticket becomes a ticket on the timeline as a webhook would make it, its
    requester's emails, phone and social ids looked up 100 at a time; a deleted one is skipped."""
    api.get(EXPORT, json=ZENDESK_PAGE)
    api.get(SHOW_MANY, json=ANN_USERS)
    state = import_history(core, "zendesk")
    assert (state.status, state.imported, state.skipped, state.refused) == (DONE, 3, 1, 0)
    assert state.reasons == {"skipped: deleted in Zendesk": 1}
    assert state.api_calls == 2 and state.progress == 1.0
    since = str(int(SINCE.replace(tzinfo=UTC).timestamp()))
    assert asked(api, EXPORT) == [
        {"start_time": [since], "per_page": ["1000"], "include": ["users"]}
    ]
    assert asked(api, SHOW_MANY) == [{"ids": [str(ANN)], "include": ["identities"]}]
    found = [(r.external_id, r.kind, r.channel, r.status, r.number, r.said_by, r.agent)
             for r in rows(core)]  # fmt: skip
    assert found == [
        ("4801", "ticket", "email", "closed", "4801", "customer", "Lee Agent"),
        ("4950", "ticket", "facebook", "solved", "4950", "customer", None),
        ("5003", "ticket", "phone", "open", "5003", "agent", "Lee Agent"),
    ]
    first = rows(core)[0]
    assert first.occurred_at == datetime(2026, 3, 2, 9, 14, 5)
    assert first.text.startswith("Hi, my router drops the connection")
    assert {r.customer_id for r in rows(core)} == {rows(core, customers)[0].id}
    identities = json.loads(first.identities)
    assert ["twitter", "annexample"] in identities and ["phone", "+14155550142"] in identities
    assert count(core, writes) == 0, "an import writes no note"


def test_importing_again_imports_nothing_twice(core, api):
    """A second import reads the same tickets and counts them as imported before."""
    api.get(EXPORT, json=ZENDESK_PAGE)
    api.get(SHOW_MANY, json=ANN_USERS)
    import_history(core, "zendesk")
    before = [tuple(r) for r in rows(core)]
    later = build_installation(core.config)  # another run: a new process, nothing cached
    try:
        again = import_history(later, "zendesk")
    finally:
        later.dispose()
    assert (again.status, again.imported, again.unchanged, again.skipped) == (DONE, 0, 3, 1)
    assert [tuple(r) for r in rows(core)] == before
    assert count(core, history_imports) == 2
    assert len(asked(api, SHOW_MANY)) == 1, "requesters of tickets imported before are not read"


def test_a_ticket_changed_since_is_imported_again_in_its_new_version(core, api):
    """A ticket updated after the last import is read again and its new status kept."""
    api.get(EXPORT, json=ZENDESK_PAGE)
    api.get(SHOW_MANY, json=ANN_USERS)
    import_history(core, "zendesk")
    changed = copy.deepcopy(ZENDESK_PAGE["tickets"][2])
    changed.update(status="solved", updated_at="2026-06-25T12:00:00Z")
    api.replace(responses.GET, EXPORT, json=export_page([changed], "C9", end=True))
    again = import_history(core, "zendesk")
    assert (again.imported, again.unchanged) == (1, 0)
    assert [r.status for r in rows(core) if r.external_id == "5003"] == ["solved"]


def test_an_import_stopped_half_way_continues_from_its_cursor_and_counts_once(core, api):
    """Stopped after its first page, an import run again asks for the next page by the
    stored cursor and ends with each ticket counted once."""
    first, second = ZENDESK_PAGE["tickets"][:2], ZENDESK_PAGE["tickets"][2:3]
    api.get(EXPORT, json=export_page(first, "CURSOR-1", end=False))
    api.get(SHOW_MANY, json=ANN_USERS)
    stopping = threading.Event()
    state = import_history(core, "zendesk", stopping=stopping,
                           on_progress=lambda s: stopping.set())  # fmt: skip
    assert (state.status, state.imported) == (STOPPED, 2)
    assert "run it again to continue" in (state.last_error or "")
    api.replace(responses.GET, EXPORT, json=export_page(second, "CURSOR-2", end=True))
    job = HistoryImport(core, core.registry.instances["zendesk"], SINCE)
    resumed = job.run()
    assert job.resumed and resumed.id == state.id
    assert asked(api, EXPORT)[-1]["cursor"] == ["CURSOR-1"]
    assert (resumed.status, resumed.imported, resumed.unchanged) == (DONE, 3, 0)
    assert count(core, history_imports) == 1


def test_a_cursor_is_sent_back_exactly_and_one_that_could_add_to_the_query_is_refused(core, api):
    """Zendesk's base64 cursors hold + / =, which reach Zendesk as they were sent; a cursor
    with & or # in it would add to the next request, and stops the import before it is
    kept or asked for."""
    tickets = ZENDESK_PAGE["tickets"]
    api.get(EXPORT, json=export_page(tickets[:1], "MTc4+/fA==", end=False))
    api.get(SHOW_MANY, json=ANN_USERS)
    stopping = threading.Event()
    import_history(core, "zendesk", stopping=stopping, on_progress=lambda s: stopping.set())
    api.replace(responses.GET, EXPORT,
                json=export_page(tickets[1:2], "x&include=ticket_forms", end=True))  # fmt: skip
    state = import_history(core, "zendesk")
    assert asked(api, EXPORT)[-1]["cursor"] == ["MTc4+/fA=="]
    assert (state.status, state.imported) == (STOPPED, 1)
    assert "export cursor that is not one" in (state.last_error or "")
    assert len(asked(api, EXPORT)) == 2, "the forged cursor is never asked for"
    with core.engine.connect() as conn:
        assert conn.execute(select(history_imports.c.cursor)).scalar() == "MTc4+/fA=="


def test_a_page_answered_429_is_asked_again_after_retry_after(core, api):
    """Zendesk's export limit answers 429 with Retry-After: the import waits, then goes on."""
    api.get(EXPORT, status=429, headers={"Retry-After": "1"}, body="Too Many Requests")
    api.get(EXPORT, json=ZENDESK_PAGE)
    api.get(SHOW_MANY, json=ANN_USERS)
    waited = []
    state = import_history(core, "zendesk", on_progress=lambda s: waited.append(s.waiting))
    assert (state.status, state.imported) == (DONE, 3)
    assert "Zendesk asked to wait (1 s)" in waited
    assert len(asked(api, EXPORT)) == 2
    assert core.health.paused_for("zendesk") == 0, "the export's limit does not pause notes"


def test_a_refused_api_token_stops_the_import_naming_the_settings(core, api):
    """A 401 stops the import at once with a message naming the settings to check."""
    api.get(EXPORT, status=401, json={"error": "Couldn't authenticate you"})
    state = import_history(core, "zendesk")
    assert state.status == STOPPED
    assert "integrations.zendesk.email and api_token" in (state.last_error or "")
    assert count(core, interactions) == 0


def test_malformed_tickets_are_refused_with_their_reason_and_the_rest_imported(core, api):
    """Tickets with a forged id, a bad time or a bad requester are counted and skipped."""
    good = ZENDESK_PAGE["tickets"][0]
    bad = [
        dict(good, id="5141/../../users/me"),
        dict(good, id=4802, updated_at="yesterday"),
        dict(good, id=4803, requester_id="../me"),
        "not a ticket",
    ]
    api.get(EXPORT, json=export_page([good, *bad], "C1", end=True))
    api.get(SHOW_MANY, json=ANN_USERS)
    state = import_history(core, "zendesk")
    assert (state.status, state.imported, state.refused) == (DONE, 1, 4)
    assert state.reasons == {
        "refused: its id is not a Zendesk id": 2,
        "refused: updated_at is not a time": 1,
        "refused: requester_id is not a Zendesk id": 1,
    }
    assert [r.external_id for r in rows(core)] == ["4801"]


def test_a_value_the_store_refuses_costs_that_record_only_not_its_batch(core, api, monkeypatch):
    """A batch is written in one go; when the store refuses a record in it, the batch is
    written again record by record, and only that one is counted, with nothing half-stored."""
    real = backfill.record_event

    def refusing(core, conn, plugin, prepared, *args, **kwargs):
        recorded = real(core, conn, plugin, prepared, *args, **kwargs)
        if prepared.key.startswith("history:ticket:4950@"):
            raise IntegrityError("INSERT INTO interactions", {}, Exception("refused"))
        return recorded

    monkeypatch.setattr(backfill, "record_event", refusing)
    api.get(EXPORT, json=ZENDESK_PAGE)
    api.get(SHOW_MANY, json=ANN_USERS)
    state = import_history(core, "zendesk")
    assert (state.status, state.imported, state.refused) == (DONE, 2, 1)
    assert state.reasons == {
        "refused: the store refused a value": 1,
        "skipped: deleted in Zendesk": 1,
    }
    assert [r.external_id for r in rows(core)] == ["4801", "5003"]


def test_records_of_one_batch_link_customers_as_webhooks_would(core, api):
    """Within one batch, resolution sees what the records before it did: a requester seen
    twice is one customer, and a phone that several Zendesk users give is a shared line."""
    people = {
        8447388090701: ("Ann A", [("email", "a@example.com"), ("phone_number", "+14155550160")]),
        8447388090702: ("Bea B", [("email", "b@example.com"), ("phone_number", "+14155550160")]),
        8447388090703: ("Cy C", [("phone_number", "+14155550160")]),
    }  # fmt: skip
    template = ZENDESK_PAGE["tickets"][0]
    tickets = [dict(template, id=7001 + n, requester_id=who, submitter_id=who)
               for n, who in enumerate([*people, 8447388090701])]  # fmt: skip
    page = export_page(tickets, "C1", end=True)
    page["users"] = [dict(ZENDESK_PAGE["users"][0], id=who, name=name, email=None, phone=None)
                     for who, (name, _) in people.items()]  # fmt: skip
    api.get(EXPORT, json=page)
    api.get(SHOW_MANY, json={
        "users": page["users"], "next_page": None, "previous_page": None, "count": 3,
        "identities": [{"id": n, "user_id": who, "type": kind, "value": value}
                       for n, (who, (_, found)) in enumerate(people.items())
                       for kind, value in found],
    })  # fmt: skip
    state = import_history(core, "zendesk")
    assert (state.status, state.imported) == (DONE, 4)
    by_ticket = {r.external_id: r for r in rows(core)}
    ann, bea = by_ticket["7001"].customer_id, by_ticket["7002"].customer_id
    assert ann is not None and bea is not None and ann != bea
    assert by_ticket["7004"].customer_id == ann
    cy = by_ticket["7003"].customer_id
    assert cy not in (None, ann, bea)
    with core.engine.connect() as conn:
        line = conn.execute(
            select(identities.c.customer_id, identities.c.shared)
            .where(identities.c.type == "phone", identities.c.value == "+14155550160")
            .order_by(identities.c.customer_id)
        ).all()
    assert [tuple(r) for r in line] == [(ann, True), (bea, True), (cy, True)]


def test_a_page_that_is_not_json_is_asked_again_and_the_import_stops_after_five_tries(
    core, api, monkeypatch
):
    """A proxy's error page where the export should be is a failure to retry with backoff,
    then a stop that says what came back, with nothing imported and no cursor kept."""
    monkeypatch.setattr(backfill, "FIRST_BACKOFF_S", 0.001)
    api.get(EXPORT, body="<html>Bad gateway</html>", content_type="text/html")
    state = import_history(core, "zendesk")
    assert (state.status, state.imported) == (STOPPED, 0)
    assert "no JSON page" in (state.last_error or "") and "5 tries" in (state.last_error or "")
    assert len(asked(api, EXPORT)) == 5
    with core.engine.connect() as conn:
        assert conn.execute(select(history_imports.c.cursor)).scalar() is None


def test_an_import_stops_when_the_mapping_in_use_has_no_history_event(core, api):
    """A mapping saved before imports existed cannot map them: the import says so."""
    mapping = core.mappings["zendesk"]
    mapping.events.pop("history.ticket")
    state = import_history(core, "zendesk")
    assert state.status == STOPPED
    assert "has no history.ticket event" in (state.last_error or "")
    assert len(api.calls) == 0


def test_the_next_new_ticket_gets_a_summary_naming_the_imported_history(core, api):
    """After the import, a webhook for a new ticket of the same requester gets the note,
    which names the imported tickets; no imported ticket got one."""
    api.get(EXPORT, json=ZENDESK_PAGE)
    api.get(SHOW_MANY, json=ANN_USERS)
    import_history(core, "zendesk")
    api.put(f"{ZD}/api/v2/tickets/6001.json", json={"ticket": {"id": 6001}, "audit": {}})
    body = zendesk_event(
        "ticket_created__mail.json", id="6001", event_id="01HNEWTICKET0000000000001"
    )
    client = create_app(core=core).test_client()
    assert (
        client.post("/hooks/zendesk", data=body, headers=zendesk_headers(body)).status_code == 200
    )
    Worker(core).drain()
    notes = [json.loads(c.request.body)["ticket"]["comment"] for c in api.calls
             if c.request.method == "PUT"]  # fmt: skip
    assert len(notes) == 1
    text = notes[0].get("html_body") or notes[0]["body"]
    assert "#4801" in text and "Router keeps dropping" in text
    assert [w.target_ref for w in rows(core, writes)] == ["6001"]


def test_a_webhook_for_an_imported_ticket_changes_the_same_record(core, api):
    """A webhook about a ticket the import brought updates that ticket, not a second one."""
    api.get(EXPORT, json=ZENDESK_PAGE)
    api.get(SHOW_MANY, json=ANN_USERS)
    import_history(core, "zendesk")
    body = json.dumps(json.loads(zendesk_event("ticket_status_changed.json", id="5003"))).encode()
    client = create_app(core=core).test_client()
    assert (
        client.post("/hooks/zendesk", data=body, headers=zendesk_headers(body)).status_code == 200
    )
    Worker(core).drain()
    assert [r.external_id for r in rows(core)].count("5003") == 1
    assert count(core, writes) == 0


# -- Salesforce ------------------------------------------------------------------------------


def test_salesforce_cases_are_imported_with_their_contacts_and_meet_the_zendesk_customer(core, api):
    """Cases come in by CaseNumber with the contact's email and phones (no contact look-up),
    closed cases closed, and Ann's cases join her Zendesk tickets as one customer."""
    api.get(EXPORT, json=ZENDESK_PAGE)
    api.get(SHOW_MANY, json=ANN_USERS)
    import_history(core, "zendesk")
    api.get(SF_QUERY, json=CASES_PAGE)
    state = import_history(core, "salesforce")
    assert (state.status, state.imported, state.refused) == (DONE, 3, 0)
    soql = asked(api, SF_QUERY)[0]["q"][0]
    assert soql.startswith("SELECT Id, CaseNumber") and "Contact.MobilePhone FROM Case" in soql
    assert "WHERE LastModifiedDate >= 2025-12-06T00:00:00Z ORDER BY LastModifiedDate, Id" in soql
    assert not [c for c in api.calls if "/sobjects/Contact/" in c.request.url]
    cases = {r.number: r for r in rows(core) if r.kind == "case"}
    assert {n: (c.status, c.channel) for n, c in cases.items()} == {
        "00001001": ("closed", "web"), "00001017": ("working", "phone"),
        "00001020": ("new", "email"),
    }  # fmt: skip
    tickets = [r for r in rows(core) if r.kind == "ticket"]
    assert cases["00001001"].customer_id == tickets[0].customer_id
    assert cases["00001017"].customer_id == tickets[0].customer_id
    assert cases["00001020"].customer_id not in (None, tickets[0].customer_id)
    assert count(core, writes) == 0


def test_the_plan_counts_the_cases_and_the_api_calls_left_today(core, api):
    """Before it starts, the import says what it will cost of the org's daily budget."""
    api.get(SF_QUERY, json={"totalSize": 4100, "done": True, "records": []})
    api.get(SF_LIMITS, json={"DailyApiRequests": {"Max": 15000, "Remaining": 14200}})
    plan = core.registry.instances["salesforce"].history_plan(SINCE)
    assert plan == "4,100 cases: about 3 API calls of 14,200 left today (of 15,000)"
    assert asked(api, SF_QUERY)[0]["q"] == [
        "SELECT COUNT() FROM Case WHERE LastModifiedDate >= 2025-12-06T00:00:00Z"
    ]


def test_a_salesforce_import_follows_query_more_and_stops_to_keep_the_daily_budget(core, api):
    """A query's next batch is read by its nextRecordsUrl; when the org reports too few
    calls left, the import stops to be continued, keeping its cursor."""
    first = dict(CASES_PAGE, done=False, records=CASES_PAGE["records"][:1],
                 nextRecordsUrl="/services/data/v59.0/query/01gD0000002HU6KIAW-2000")  # fmt: skip
    api.get(SF_QUERY, json=first, headers={"Sforce-Limit-Info": "api-usage=14500/15000"})
    state = import_history(core, "salesforce")
    assert (state.status, state.imported) == (STOPPED, 1)
    assert "today's Salesforce Service Cloud API budget" in (state.last_error or "")
    more = f"{SF_INSTANCE}/services/data/v59.0/query/01gD0000002HU6KIAW-2000"
    api.get(more, json=dict(CASES_PAGE, records=CASES_PAGE["records"][1:]))
    api.replace(responses.GET, SF_QUERY, json=first,
                headers={"Sforce-Limit-Info": "api-usage=200/15000"})  # fmt: skip
    resumed = import_history(core, "salesforce")
    assert (resumed.status, resumed.imported) == (DONE, 3)
    resumed_soql = asked(api, SF_QUERY)[-1]["q"][0]
    assert "LastModifiedDate >= 2026-03-12T15:30:00Z" in resumed_soql, "from the cursor"


def test_a_refused_salesforce_session_stops_the_import_naming_the_settings(core, api):
    """An expired session_id stops the import with what to check."""
    api.get(SF_QUERY, status=401, json=[{"errorCode": "INVALID_SESSION_ID", "message": "x"}])
    state = import_history(core, "salesforce")
    assert state.status == STOPPED
    assert "check integrations.salesforce: session_id and instance_url" in (state.last_error or "")


# -- Twilio ------------------------------------------------------------------------------------


def test_twilio_calls_are_imported_with_direction_status_duration_and_the_caller(core, api):
    """Ended calls become calls of the caller's number; an agent's leg is left out."""
    api.get(CALLS, json=CALLS_PAGE)
    state = import_history(core, "twilio")
    assert (state.status, state.imported, state.skipped) == (DONE, 2, 1)
    assert state.reasons == {"skipped: an agent's leg of another call": 1}
    assert asked(api, CALLS) == [{"StartTime>": ["2025-12-06"], "PageSize": ["1000"]}]
    calls = [(r.external_id, r.direction, r.status, r.duration_s, json.loads(r.identities))
             for r in rows(core)]  # fmt: skip
    assert calls == [
        ("CA5e0a9d2f3b6c4e1f8a7b6c5d4e3f2a10", "inbound", "completed", 374,
         [["phone", "+14155550142"]]),
        ("CA1b2c3d4e5f60718293a4b5c6d7e8f901", "inbound", "no-answer", 0,
         [["phone", "+12125550107"]]),
    ]  # fmt: skip
    assert count(core, writes) == 0, "an ended call of the past gets no call note"


def test_a_next_page_twilio_names_off_the_account_is_never_requested(core, api):
    """A next_page_uri that leaves the account's Calls list stops the import unrequested,
    before the page is recorded, so the stored cursor stays one Carryover may follow."""
    forged = "/2010-04-01/Accounts/ACx/Calls.json?a=1"
    api.get(CALLS, json=dict(CALLS_PAGE, next_page_uri=forged))
    state = import_history(core, "twilio")
    assert (state.status, state.imported) == (STOPPED, 0)
    assert "not this account's calls" in (state.last_error or "")
    assert len(api.calls) == 1
    with core.engine.connect() as conn:
        assert conn.execute(select(history_imports.c.cursor)).scalar() is None


def test_twilio_without_an_account_sid_says_which_setting_imports_calls(database_url, make_config):
    """Importing calls needs the Account SID, as the plan already says; a malformed one is
    refused at start."""
    core = build_installation(make_config(database_url, phone=True))
    try:
        with pytest.raises(PermanentUpstreamError, match="set integrations.twilio.account_sid"):
            core.registry.instances["twilio"].history_plan(SINCE)
        state = import_history(core, "twilio")
        assert state.status == STOPPED
        assert "set integrations.twilio.account_sid" in (state.last_error or "")
    finally:
        core.dispose()
    forged = make_config(database_url, phone=True, twilio={"account_sid": "AC../../x"})
    with pytest.raises(ConfigError, match="integrations.twilio.account_sid: expected AC"):
        build_installation(forged)


# -- the command -------------------------------------------------------------------------------


def test_since_takes_a_date_or_days_back_from_midnight():
    """--since reads 2026-01-31 or 90d (back from today's midnight), nothing else."""
    now = datetime(2026, 12, 6, 17, 30)
    assert parse_since("90d", now) == datetime(2026, 9, 7)
    assert parse_since("2026-01-31", now) == datetime(2026, 1, 31)
    for bad in ("yesterday", "90", "2027-01-01", "-5d", "99999999d"):
        with pytest.raises(ValueError):
            parse_since(bad, now)


def test_an_import_whose_process_was_killed_is_continued_at_once(core, api):
    """A running import whose process on this host is gone (kill -9) is continued by the
    next one; one whose process is alive is not taken over."""
    api.get(EXPORT, json=export_page(ZENDESK_PAGE["tickets"][:1], "CURSOR-1", end=False))
    api.get(SHOW_MANY, json=ANN_USERS)
    stopping = threading.Event()
    first = import_history(core, "zendesk", stopping=stopping,
                           on_progress=lambda s: stopping.set())  # fmt: skip
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with core.engine.begin() as conn:  # as a kill -9 leaves it: running, heard of just now
        conn.execute(
            update(history_imports).values(
                status="running", owner=f"{socket.gethostname()}:{dead.pid}", updated_at=utcnow()
            )
        )
    api.replace(
        responses.GET, EXPORT, json=export_page(ZENDESK_PAGE["tickets"][1:3], "C2", end=True)
    )
    job = HistoryImport(core, core.registry.instances["zendesk"], SINCE)
    resumed = job.run()
    assert job.resumed and resumed.id == first.id
    assert (resumed.status, resumed.imported) == (DONE, 3)
    with core.engine.begin() as conn:
        conn.execute(
            update(history_imports).values(
                status="running", owner=f"{socket.gethostname()}:{os.getpid()}", updated_at=utcnow()
            )
        )
    with pytest.raises(ImportBusy, match="is running"):
        HistoryImport(core, core.registry.instances["zendesk"], SINCE).begin()


def test_two_imports_started_at_once_do_not_both_run(core, monkeypatch):
    """Each start looks for a running import and then records its own: two at once, across
    processes, are queued by the store, so the second finds the first and is refused."""
    both_looked = threading.Barrier(2, timeout=1)
    real = backfill.latest_import

    def looking_slowly(conn, plugin):
        found = real(conn, plugin)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_looked.wait()  # without the store's queue, both would pass here together
        return found

    monkeypatch.setattr(backfill, "latest_import", looking_slowly)
    outcomes: list[str] = []

    def start():
        try:
            HistoryImport(core, core.registry.instances["zendesk"], SINCE).begin()
            outcomes.append("started")
        except ImportBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["busy", "started"]
    assert count(core, history_imports) == 1
