"""Refused deliveries leave a trace: counted by reason, the last few kept, shown and logged."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from sqlalchemy import create_engine, select

from middleware.ingest.refusals import KEPT_PER_PLUGIN, REASONS, RefusalReport, refusal_reports
from middleware.installation import Installation, build_installation
from middleware.integrations.registry import PluginRegistry
from middleware.store.tables import deliveries, reading, refusal_counts, refusals, utcnow
from middleware.web.app import create_app
from plugins.twilio import sign as twilio_sign
from tests.payloads import (
    cti_body,
    cti_headers,
    fixture_bytes,
    outbound_message,
    twilio_fields,
    zendesk_headers,
)
from tests.values import CTI_SECRET, SOAP_HEADERS, TWILIO_TOKEN

WRONG_ZENDESK_SECRET = "bm90IHRoZSBzZWNyZXQgb2YgdGhpcyB3ZWJob29r"


def report(core: Installation, plugin: str) -> RefusalReport:
    """Write what the process gathered, and read the plugin's refusals as the pages do."""
    assert core.refusals.flush()
    hints = {k: dict(c.refusal_hints) for k, c in core.registry.classes.items()}
    with reading(core.engine) as conn:
        return refusal_reports(conn, hints, utcnow())[plugin]


def counts(rep: RefusalReport) -> dict[str, int]:
    return {c.reason.key: c.last_day for c in rep.by_reason}


def stored_rows(core: Installation) -> str:
    """Return everything the refusal tables hold, as one text."""
    with reading(core.engine) as conn:
        rows = [*conn.execute(select(refusals)), *conn.execute(select(refusal_counts))]
    return json.dumps([list(r) for r in rows], default=str)


def delivery_count(core: Installation) -> int:
    with reading(core.engine) as conn:
        return len(conn.execute(select(deliveries.c.id)).all())


# -- Zendesk ---------------------------------------------------------------------------------


def test_a_wrong_zendesk_secret_is_counted_with_what_to_check(client, core):
    """A delivery signed with another secret is refused as before and counted as 'signature'."""
    body = fixture_bytes("ticket_created__mail.json")
    headers = zendesk_headers(body, secret=WRONG_ZENDESK_SECRET)
    response = client.post("/hooks/zendesk", data=body, headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": "X-Zendesk-Webhook-Signature does not match"}
    rep = report(core, "zendesk")
    assert counts(rep) == {"signature": 1} and rep.last_day == 1
    assert rep.top is not None and rep.top.label == "signature does not match"
    assert "webhook_secret is Zendesk's signing secret" in rep.top.hint
    [refused] = rep.recent
    assert (refused.reason.key, refused.address) == ("signature", "127.0.0.1")
    assert delivery_count(core) == 0


def test_nothing_of_the_request_is_kept(client, core):
    """The refusal tables hold no body, header value or signature of the refused delivery."""
    body = fixture_bytes("ticket_created__mail.json")
    headers = zendesk_headers(body, secret=WRONG_ZENDESK_SECRET)
    client.post("/hooks/zendesk", data=body, headers=headers)
    report(core, "zendesk")
    kept = stored_rows(core)
    for value in headers.values():
        assert value not in kept
    assert "Ann" not in kept and "ticket" not in kept


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"drop": True}, "missing-signature"),
        ({"timestamp": "2020-01-01T00:00:00Z"}, "timestamp"),
    ],
)
def test_zendesk_refusals_name_the_check_that_failed(client, core, change, reason):
    """A missing signature and a stale (rightly signed) one are told apart."""
    body = fixture_bytes("ticket_created__mail.json")
    if change.get("drop"):
        headers = {"Content-Type": "application/json"}
    else:
        headers = zendesk_headers(body, timestamp=change["timestamp"])
    assert client.post("/hooks/zendesk", data=body, headers=headers).status_code == 401
    assert counts(report(core, "zendesk")) == {reason: 1}


def test_a_malformed_body_is_counted_under_its_own_reason(client, core):
    """A rightly signed body that is not JSON gets 400 and counts as 'malformed'."""
    body = b"this is not json"
    response = client.post("/hooks/zendesk", data=body, headers=zendesk_headers(body))
    assert response.status_code == 400
    rep = report(core, "zendesk")
    assert counts(rep) == {"malformed": 1}
    assert rep.top is not None and "trigger's JSON body" in rep.top.hint


def test_an_accepted_or_ignored_delivery_is_not_a_refusal(client, core, hooks):
    """Only refusals are counted: an accepted and an ignored delivery leave no count."""
    assert hooks.zendesk(fixture_bytes("ticket_created__mail.json")).status_code == 200
    assert hooks.zendesk(fixture_bytes("test_webhook.json")).status_code == 200
    core.refusals.flush()
    with reading(core.engine) as conn:
        assert refusal_reports(conn, {}, utcnow()) == {}


def test_the_address_is_the_client_behind_a_trusted_proxy(database_url, make_config):
    """Behind a trusted proxy the refusal names the client it forwarded, not the proxy."""
    core = build_installation(make_config(database_url, phone=True,
                                          trusted_proxies=["10.0.0.0/8"]))  # fmt: skip
    try:
        client = create_app(core=core).test_client()
        body = cti_body("newCall.json")
        headers = {**cti_headers(body, secret="whsec_" + "A" * 32),
                   "X-Forwarded-For": "203.0.113.9"}  # fmt: skip
        response = client.post(
            "/hooks/cti", data=body, headers=headers, environ_base={"REMOTE_ADDR": "10.1.2.3"}
        )
        assert response.status_code == 401
        assert [r.address for r in report(core, "cti").recent] == ["203.0.113.9"]
    finally:
        core.dispose()


# -- the phone: CTI and Twilio ---------------------------------------------------------------


def test_cti_refusals_by_reason(client, core):
    """A wrong path token, a wrong signature and a stale timestamp count apart."""
    body = cti_body("newCall.json")
    assert client.post("/hooks/cti/not-the-secret", data=body,
                       content_type="application/json").status_code == 401  # fmt: skip
    wrong = cti_headers(body, secret="whsec_" + "A" * 32)
    assert client.post("/hooks/cti", data=body, headers=wrong).status_code == 401
    stale = cti_headers(body, timestamp=int(datetime.now(UTC).timestamp()) - 3600)
    assert client.post("/hooks/cti", data=body, headers=stale).status_code == 401
    rep = report(core, "cti")
    assert counts(rep) == {"path-token": 1, "signature": 1, "timestamp": 1}
    hints = {c.reason.key: c.reason.hint for c in rep.by_reason}
    assert "ends with the current secret" in hints["path-token"]
    assert "not-the-secret" not in stored_rows(core) and CTI_SECRET not in stored_rows(core)


def test_a_twilio_signature_with_a_wrong_token(client, core):
    """A request signed with another Auth Token counts as 'signature', hinting at auth_token."""
    fields = twilio_fields("call_started__ringing.form")
    signature = twilio_sign("another-token", "http://127.0.0.1:8080/hooks/twilio", fields)
    response = client.post("/hooks/twilio", data=urlencode(fields),
                           headers={"X-Twilio-Signature": signature},
                           content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert response.status_code == 401
    rep = report(core, "twilio")
    assert counts(rep) == {"signature": 1}
    assert rep.top is not None and "auth_token" in rep.top.hint


def test_a_twilio_signature_for_another_url_is_a_url_mismatch(client, core):
    """Signed with the right token for the URL Twilio called, not public_url: 'URL mismatch'."""
    fields = twilio_fields("call_started__ringing.form")
    # The test client calls http://localhost/…, while public_url is http://127.0.0.1:8080.
    signature = twilio_sign(TWILIO_TOKEN, "http://localhost/hooks/twilio", fields)
    response = client.post("/hooks/twilio", data=urlencode(fields),
                           headers={"X-Twilio-Signature": signature},
                           content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert response.status_code == 401
    assert response.get_json() == {
        "error": "X-Twilio-Signature does not match (is public_url the URL Twilio calls?)"
    }
    rep = report(core, "twilio")
    assert counts(rep) == {"url": 1}
    assert rep.top is not None and rep.top.label == "URL mismatch"
    assert "Twilio signs the URL it calls: check public_url" in rep.top.hint


# -- Salesforce ------------------------------------------------------------------------------


@pytest.fixture
def salesforce_core(database_url, make_config) -> Iterator[Installation]:
    """Build an installation that takes Salesforce messages from 127.0.0.1 only."""
    core = build_installation(make_config(database_url, salesforce={}))
    yield core
    core.dispose()


def test_another_org_is_a_wrong_organization(salesforce_core):
    """A message of another org gets its SOAP fault, and counts as 'wrong organization'."""
    client = create_app(core=salesforce_core).test_client()
    body = outbound_message("case_created.xml").replace(b"00D70000000IVNp", b"00D99000000XyZa")
    response = client.post("/hooks/salesforce", data=body, headers=SOAP_HEADERS)
    assert response.status_code == 401 and b"soapenv:Client" in response.data
    rep = report(salesforce_core, "salesforce")
    assert counts(rep) == {"organization": 1}
    assert rep.top is not None and "check organization_id" in rep.top.hint


def test_a_message_from_outside_allowed_networks(salesforce_core):
    """A message of the org from an address outside allowed_networks counts as such."""
    client = create_app(core=salesforce_core).test_client()
    body = outbound_message("case_created.xml")
    outside = {"REMOTE_ADDR": "198.51.100.7"}
    response = client.post("/hooks/salesforce", data=body, headers=SOAP_HEADERS,
                           environ_base=outside)  # fmt: skip
    assert response.status_code == 401
    rep = report(salesforce_core, "salesforce")
    assert counts(rep) == {"source-network": 1}
    assert [r.address for r in rep.recent] == ["198.51.100.7"]


# -- a flood costs one write a second, counts stay exact -------------------------------------


def test_a_flood_is_gathered_in_memory_and_counted_exactly(client, core):
    """Many refusals between two writes make one write, and every one of them is counted."""
    core.refusals.flush_every_s = 3600  # the timer writes once, then not within the test
    body = fixture_bytes("ticket_created__mail.json")
    headers = zendesk_headers(body, secret=WRONG_ZENDESK_SECRET)
    for _ in range(KEPT_PER_PLUGIN + 15):
        assert client.post("/hooks/zendesk", data=body, headers=headers).status_code == 401
    rep = report(core, "zendesk")
    assert core.refusals.writes <= 2  # the timer's first write, and the one report() made
    assert counts(rep) == {"signature": KEPT_PER_PLUGIN + 15}
    assert len(rep.recent) == KEPT_PER_PLUGIN
    with reading(core.engine) as conn:
        assert len(conn.execute(select(refusals.c.id)).all()) == KEPT_PER_PLUGIN


def test_the_store_down_still_answers_401_and_loses_no_count(client, core, tmp_path):
    """While the store cannot be written the sender still gets 401; the counts are written later."""
    engine = core.refusals.engine
    core.refusals.flush_every_s = 3600
    core.refusals.engine = create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db")
    body = fixture_bytes("ticket_created__mail.json")
    headers = zendesk_headers(body, secret=WRONG_ZENDESK_SECRET)
    for _ in range(3):
        assert client.post("/hooks/zendesk", data=body, headers=headers).status_code == 401
    assert core.refusals.flush() is False
    core.refusals.engine = engine
    assert counts(report(core, "zendesk")) == {"signature": 3}


def test_a_failure_to_record_never_turns_a_401_into_a_500(client, core, monkeypatch):
    """Even a bug in recording leaves the sender its 401."""

    def broken(*args: object) -> None:
        raise RuntimeError("recording is broken")

    monkeypatch.setattr(core.refusals, "record", broken)
    body = fixture_bytes("ticket_created__mail.json")
    headers = zendesk_headers(body, secret=WRONG_ZENDESK_SECRET)
    assert client.post("/hooks/zendesk", data=body, headers=headers).status_code == 401


def test_counts_from_several_processes_add_up(client, core, database_url, make_config):
    """Two processes writing refusals of one integration and hour add their counts."""
    other = build_installation(make_config(database_url, phone=True))
    try:
        other_client = create_app(core=other).test_client()
        body = cti_body("newCall.json")
        for c in (client, other_client, other_client):
            c.post("/hooks/cti/wrong", data=body, content_type="application/json")
        assert other.refusals.flush()
        assert counts(report(core, "cti")) == {"path-token": 3}
    finally:
        other.dispose()


def test_old_counts_are_dropped(client, core):
    """Hourly counts older than the days kept are deleted when refusals are next written."""
    old = utcnow() - timedelta(days=40)
    with core.engine.begin() as conn:
        conn.execute(refusal_counts.insert().values(plugin="cti", reason="signature",
                                                    hour=old, count=5, last_at=old))  # fmt: skip
    client.post("/hooks/cti/wrong", data=cti_body("newCall.json"), content_type="application/json")
    assert counts(report(core, "cti")) == {"path-token": 1}


def test_refusals_are_logged_once_per_interval_with_the_count(client, core, caplog):
    """A run of refusals logs one line per integration and reason, naming what to check."""
    caplog.set_level(logging.WARNING, logger="middleware.ingest.refusals")
    body = fixture_bytes("ticket_created__mail.json")
    headers = zendesk_headers(body, secret=WRONG_ZENDESK_SECRET)
    for _ in range(5):
        client.post("/hooks/zendesk", data=body, headers=headers)
    client.post("/hooks/cti/wrong", data=cti_body("newCall.json"), content_type="application/json")
    lines = [r.getMessage() for r in caplog.records if r.name == "middleware.ingest.refusals"]
    assert lines == [
        "refused a zendesk delivery from 127.0.0.1: signature does not match; "
        + dict(core.registry.classes["zendesk"].refusal_hints)["signature"],
        "refused a cti delivery from 127.0.0.1: wrong secret in the URL; "
        + dict(core.registry.classes["cti"].refusal_hints)["path-token"],
    ]
    assert headers["X-Zendesk-Webhook-Signature"] not in caplog.text


def test_every_hint_a_plugin_gives_is_for_a_known_reason():
    """Plugins give hints only for reasons the core knows, so none goes unshown."""
    for key, cls in PluginRegistry.from_entry_points().classes.items():
        assert set(cls.refusal_hints) <= set(REASONS), key


def test_what_is_gathered_is_written_on_shutdown(database_url, make_config, core):
    """Refusals still in memory when a process stops are written by dispose()."""
    stopping = build_installation(make_config(database_url, phone=True))
    stopping.refusals.flush_every_s = 3600
    client = create_app(core=stopping).test_client()
    body = cti_body("newCall.json")
    for _ in range(3):
        client.post("/hooks/cti/wrong", data=body, content_type="application/json")
    stopping.dispose()
    assert counts(report(core, "cti")) == {"path-token": 3}
