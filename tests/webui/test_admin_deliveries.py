"""The deliveries pages: filterable lists, payloads as stored, trails, replay."""

from __future__ import annotations

import json

from sqlalchemy import select

from middleware.store.tables import deliveries, writes
from tests.payloads import cti_body, fixture_bytes, salesforce_fixture


def mail_ticket_with_bad_date() -> bytes:
    """Return a signed-to-be ticket.created whose created_at the mapping cannot read."""
    payload = json.loads(fixture_bytes("ticket_created__mail.json"))
    payload["id"] = "bad-date-event"
    payload["detail"]["created_at"] = "not a date"
    return json.dumps(payload).encode()


def status_of(core, table, row_id: int) -> tuple[str, int]:
    with core.engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.id == row_id)).one()
    return row.status, row.attempts


def test_the_list_shows_webhooks_and_filters_by_status(admin_client, worker, hooks):
    """Webhooks are listed newest first; the status filter narrows the list."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(mail_ticket_with_bad_date())
    worker.drain()
    page = admin_client.get("/admin/deliveries/").data.decode()
    assert "in:1" in page and "in:2" in page
    assert page.index("in:2") < page.index("in:1")
    dead = admin_client.get("/admin/deliveries/?status=dead").data.decode()
    assert "in:2" in dead and "in:1" not in dead
    assert "occurred_at" in dead and "is not a date" in dead  # the error names the path
    assert "1 dead webhook" in dead


def test_a_webhook_shows_its_payload_as_stored_and_its_trail(
    admin_client, worker, hooks, fake_zendesk
):
    """The detail shows the indented payload with card numbers already redacted, and the trail."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    page = admin_client.get("/admin/deliveries/in/1").data.decode()
    assert "[card ending 1111]" in page and "4111" not in page.replace("[card ending 1111]", "")
    assert "&#34;type&#34;: &#34;zen:event-type:ticket.created&#34;" in page  # indented JSON
    assert "processed" in page and "zendesk:ticket:5141" in page
    assert "x-zendesk-webhook-signature" in page


def test_a_json_body_with_a_lone_surrogate_escape_is_shown_as_that_escape(
    admin_client, worker, hooks
):
    """A stored body holding \\ud800 (valid JSON, no character) is shown, not a 500."""
    assert hooks.cti(cti_body("newCall.json", user="Emma \ud800")).status_code == 200
    worker.drain()
    page = admin_client.get("/admin/deliveries/in/1")
    assert page.status_code == 200
    assert "&#34;user&#34;: &#34;Emma \\ud800&#34;" in page.data.decode()


def test_a_salesforce_message_is_shown_as_indented_xml_without_its_session(
    database_url, fake_zendesk, make_config, admin_for, hooks_for
):
    """SOAP bodies are shown indented, and the session id Salesforce sent is not there."""
    from middleware.admin.accounts import create_admin
    from middleware.installation import build_installation
    from middleware.web.app import create_app
    from tests.values import ADMIN_PASSWORD

    # The source network proves the message; its session is not checked (no API here).
    config = make_config(database_url, fake_zendesk.url, salesforce={"verify_session_id": False})
    built = build_installation(config)
    try:
        client = create_app(core=built).test_client()
        create_admin(built.engine, "ada", ADMIN_PASSWORD)
        admin_for(client).log_in()
        hooks_for(client).salesforce(salesforce_fixture("case_created__web_to_case.xml"))
        page = client.get("/admin/deliveries/in/1").data.decode()
        assert "FakeSessionForFixtureOnly" not in page
        assert "\n          &lt;sf:Subject&gt;Charged twice for January&lt;/sf:Subject&gt;" in page
    finally:
        built.dispose()


def test_replaying_one_dead_webhook_queues_it_again(admin_client, worker, core, hooks, admin):
    """Replay puts a dead webhook back in the queue with its attempts reset."""
    hooks.zendesk(mail_ticket_with_bad_date())
    worker.drain()
    assert status_of(core, deliveries, 1)[0] == "dead"
    token = admin.csrf(admin_client.get("/admin/deliveries/in/1").data)
    response = admin_client.post("/admin/deliveries/in/1/replay", data={"csrf_token": token})
    assert response.status_code == 302
    assert status_of(core, deliveries, 1) == ("pending", 0)
    assert "queued again" in admin_client.get(response.headers["Location"]).data.decode()


def test_replay_without_the_csrf_token_changes_nothing(admin_client, worker, core, hooks):
    """A forged replay request is refused and the row stays as it was."""
    hooks.zendesk(mail_ticket_with_bad_date())
    worker.drain()
    assert admin_client.post("/admin/deliveries/in/1/replay").status_code == 400
    assert status_of(core, deliveries, 1)[0] == "dead"


def test_replay_every_dead_letter_queues_webhooks_and_notes(admin_client, worker, core,
                                                            fake_zendesk, hooks,
                                                            admin):  # fmt: skip
    """One button queues every dead webhook and note again, and says how many."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()  # the requester is looked up and cached: the next call is the note
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    hooks.zendesk(mail_ticket_with_bad_date())
    fake_zendesk.fail_next(422, body={"error": "RecordInvalid"})
    worker.drain()
    with core.engine.connect() as conn:
        assert conn.execute(select(writes.c.status)).scalar() == "dead"
    token = admin.csrf(admin_client.get("/admin/deliveries/?status=dead").data)
    response = admin_client.post("/admin/deliveries/replay-dead", data={"csrf_token": token},
                                 follow_redirects=True)  # fmt: skip
    assert "2 dead letters queued again." in response.data.decode()
    worker.drain()
    assert len(fake_zendesk.notes(5149)) == 1  # the note went through on replay


def test_a_note_shows_its_body_target_and_error(admin_client, worker, fake_zendesk, hooks):
    """An outbound note's page shows where it goes, its marker, body and last error."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()  # the requester is looked up and cached: the next call is the note
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    fake_zendesk.fail_next(422, body={"error": "RecordInvalid"})
    worker.drain()
    listing = admin_client.get("/admin/deliveries/?direction=out").data.decode()
    assert "out:1" in listing and "5149" in listing
    page = admin_client.get("/admin/deliveries/out/1").data.decode()
    assert "co-2-summary" in page and "Zendesk answered 422" in page
    assert f"- #5141 · new · Charged twice for my January invoice · {fake_zendesk.url}" in page


def test_an_unknown_delivery_is_a_404_page(admin_client):
    """A delivery that does not exist gets a 404 page that says so."""
    response = admin_client.get("/admin/deliveries/in/999")
    assert response.status_code == 404
    assert b"There is no delivery 999." in response.data


def test_an_id_beyond_what_the_store_holds_is_a_404_page(admin_client):
    """An id past 2**63 - 1 in an admin URL matches no page, instead of failing in the store."""
    too_big = 2**63
    for path in (f"/admin/deliveries/in/{too_big}", f"/admin/deliveries/out/{too_big}",
                 f"/admin/customers/{too_big}", f"/admin/customers/{2**63 - 1}"):  # fmt: skip
        assert admin_client.get(path).status_code == 404, path


def test_the_deliveries_pages_need_a_login(client):
    """Without a session, the list redirects to the login form."""
    assert client.get("/admin/deliveries/").status_code == 302
    assert client.post("/admin/deliveries/replay-dead").status_code == 400  # no CSRF token


def test_replaying_a_row_that_does_not_exist_goes_back_saying_so(admin_client, admin):
    """No such delivery: a redirect to the list with the reason, not an error page."""
    token = admin.csrf(admin_client.get("/admin/deliveries/").data)
    response = admin_client.post("/admin/deliveries/in/999/replay", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/admin/deliveries/?direction=in")
    page = admin_client.get(response.headers["Location"]).data.decode()
    assert "Not queued: there is no delivery 999." in page
