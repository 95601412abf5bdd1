"""The deliveries pages: filterable lists, payloads as stored, trails, replay."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from middleware.customers.edits import merge_by_admin
from middleware.store.queue import add_failure, add_trail, status_words
from middleware.store.tables import deliveries, upstream_state, utcnow, writes
from tests.payloads import cti_body, fixture_bytes, salesforce_fixture, twilio_fields


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


# -- search, paging, times, links ------------------------------------------------------------


def ann_wrote_twice(hooks, worker) -> None:
    """Ann's email (ticket 5141) and, once she is known, her Facebook message (ticket 5149),
    which gets a summary note."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()


def listed(client, **args) -> list[str]:
    """Return the delivery and note references a listing shows, in its order."""
    page = client.get("/admin/deliveries/", query_string=args)
    assert page.status_code == 200
    return re.findall(r">((?:in|out):\d+)</a>", page.data.decode())


def test_a_ticket_id_finds_the_webhooks_that_carried_that_ticket(
    admin_client, worker, hooks, fake_zendesk
):
    """Searching 5141 (or #5141) lists the webhook of ticket 5141 and not that of 5149."""
    ann_wrote_twice(hooks, worker)
    assert listed(admin_client) == ["in:2", "in:1"]
    assert listed(admin_client, q="5141") == ["in:1"]
    assert listed(admin_client, q=" #5149 ") == ["in:2"]
    page = admin_client.get("/admin/deliveries/?q=5141").data.decode()
    assert "Webhooks that carried zendesk ticket 5141." in page
    assert "1 webhook matches" in page
    assert listed(admin_client, q="51") == []  # a part of an id is not that id


def test_a_ticket_id_finds_the_notes_written_on_it_or_caused_by_it(
    admin_client, worker, hooks, fake_zendesk
):
    """Among notes, 5149 finds the summary written on ticket 5149; 5141 finds none."""
    ann_wrote_twice(hooks, worker)
    assert listed(admin_client, direction="out", q="5149") == ["out:1"]
    assert listed(admin_client, direction="out", q="5141") == []
    assert listed(admin_client, direction="out", q="ann.example@example.com") == ["out:1"]


def test_a_call_id_and_a_call_sid_find_their_calls_webhooks(admin_client, worker, hooks):
    """A PBX's callId and a Twilio CallSid each find every event of that call, only."""
    hooks.cti(cti_body("newCall.json", callId="pbx-call-1"))
    hooks.cti(cti_body("newCall.json", callId="pbx-call-2"))
    hooks.cti(cti_body("hangup.json", callId="pbx-call-1"))
    sid = "CA" + "7" * 32
    assert hooks.twilio(twilio_fields("call_started__ringing.form", CallSid=sid)).status_code == 200
    worker.drain()
    assert listed(admin_client, q="pbx-call-1") == ["in:3", "in:1"]
    assert listed(admin_client, q=sid) == ["in:4"]


def test_a_customer_is_found_by_email_name_phone_or_number(
    admin_client, worker, hooks, fake_zendesk
):
    """Each way of naming Ann finds both her webhooks; the page names her with a link."""
    ann_wrote_twice(hooks, worker)
    hooks.cti(cti_body("newCall.json", **{"from": "14155550199", "callId": "stranger"}))
    worker.drain()
    for text in ("ann.example@example.com", "Ann Exa", "555-0142", "+1 415 555 0142",
                 "customer 1", "Customer:1"):  # fmt: skip
        assert listed(admin_client, q=text) == ["in:2", "in:1"], text
    page = admin_client.get("/admin/deliveries/?q=ann.example@example.com").data.decode()
    assert 'Webhooks that spoke of <a href="/admin/customers/1">Ann Example</a>.' in page


def test_search_text_is_matched_as_text_never_as_a_pattern(
    admin_client, worker, hooks, fake_zendesk
):
    """%, _ and overlong text match nothing rather than everything; a NUL is a 400."""
    ann_wrote_twice(hooks, worker)
    for text in ("%", "_", "%%", "A_n", "Ann%", "x" * 300):
        page = admin_client.get("/admin/deliveries/", query_string={"q": text})
        assert page.status_code == 200, text
        assert "No webhooks match." in page.data.decode(), text
    page = admin_client.get("/admin/deliveries/?q=%25").data.decode()
    assert "No ticket, case, call or customer is known by “%”." in page
    assert admin_client.get("/admin/deliveries/?q=5141%00").status_code == 400


def test_a_customer_merged_away_keeps_the_webhooks_it_spoke_of(
    admin_client, worker, hooks, core, fake_zendesk
):
    """A caller later merged into Ann: searching Ann finds the call that named the old id."""
    hooks.cti(cti_body("newCall.json", **{"from": "14155550199", "callId": "before-merge"}))
    worker.drain()
    ann_wrote_twice(hooks, worker)
    assert listed(admin_client, q="Ann Example") == ["in:3", "in:2"]
    with core.engine.begin() as conn:
        merge_by_admin(conn, 1, 2, "ada")
    assert listed(admin_client, q="Ann Example") == ["in:3", "in:2", "in:1"]
    page = admin_client.get("/admin/deliveries/in/1").data.decode()
    assert '<a href="/admin/customers/2">Ann Example</a>' in page  # who customer 1 is now


def test_the_list_pages_by_older_and_newer_links(admin_client, hooks, monkeypatch):
    """Five webhooks at two a page: older links walk back, newer ones forward, counts stay."""
    monkeypatch.setattr("webui.deliveries.PAGE", 2)
    for n in range(5):
        hooks.cti(cti_body("newCall.json", callId=f"call-{n}"))
    first = admin_client.get("/admin/deliveries/").data.decode()
    assert re.findall(r">(in:\d+)</a>", first) == ["in:5", "in:4"]
    assert "5 webhooks match, newest first, 2 a page." in first and "newer" not in first
    older = html.unescape(re.search(r'href="([^"]+)" rel="next"', first).group(1))
    second = admin_client.get(older).data.decode()
    assert re.findall(r">(in:\d+)</a>", second) == ["in:3", "in:2"]
    older = html.unescape(re.search(r'href="([^"]+)" rel="next"', second).group(1))
    third = admin_client.get(older).data.decode()
    assert re.findall(r">(in:\d+)</a>", third) == ["in:1"]
    assert 'rel="next"' not in third
    newer = html.unescape(re.search(r'href="([^"]+)" rel="prev"', third).group(1))
    back = admin_client.get(newer).data.decode()
    assert re.findall(r">(in:\d+)</a>", back) == ["in:3", "in:2"]
    assert "5 webhooks match" in back


def test_paging_keeps_the_search_and_the_status(admin_client, hooks, worker, monkeypatch):
    """The older link of a searched, filtered page carries the search and status along."""
    monkeypatch.setattr("webui.deliveries.PAGE", 1)
    for event in ("newCall.json", "answer.json", "hangup.json"):
        hooks.cti(cti_body(event, callId="same-call"))
        hooks.cti(cti_body(event, callId="other-call"))
    worker.drain()
    first = admin_client.get("/admin/deliveries/?q=same-call&status=done").data.decode()
    assert re.findall(r">(in:\d+)</a>", first) == ["in:5"]
    assert "3 webhooks match" in first and '<option value="done" selected>done (3)' in first
    older = html.unescape(re.search(r'href="([^"]+)" rel="next"', first).group(1))
    assert "q=same-call" in older and "status=done" in older
    assert re.findall(r">(in:\d+)</a>", admin_client.get(older).data.decode()) == ["in:3"]


def test_a_malformed_page_id_is_a_400_not_a_500(admin_client):
    """before= and after= take a number; anything else is refused with a message."""
    for bad in ("x", "-1", "1.5", "²", str(2**63)):
        response = admin_client.get("/admin/deliveries/", query_string={"before": bad})
        assert response.status_code == 400, bad
        assert b"must be a delivery or note number" in response.data


def test_times_are_shown_in_the_installations_zone(
    database_url, fake_zendesk, make_config, admin_for, hooks_for
):
    """The time column and the detail show when a webhook came in the configured time zone."""
    from middleware.admin.accounts import create_admin
    from middleware.installation import build_installation
    from middleware.web.app import create_app
    from tests.values import ADMIN_PASSWORD

    built = build_installation(make_config(database_url, fake_zendesk.url, phone=True,
                                           timezone="America/New_York"))  # fmt: skip
    try:
        client = create_app(core=built).test_client()
        create_admin(built.engine, "ada", ADMIN_PASSWORD)
        admin_for(client).log_in()
        hooks_for(client).cti(cti_body("newCall.json"))
        with built.engine.connect() as conn:
            received = conn.execute(select(deliveries.c.received_at)).scalar_one()
        local = received.replace(tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
        shown = local.strftime("%Y-%m-%d %H:%M:%S %Z")
        assert shown in client.get("/admin/deliveries/").data.decode()
        assert shown in client.get("/admin/deliveries/in/1").data.decode()
    finally:
        built.dispose()


def test_a_webhook_links_to_its_customer_and_to_the_note_it_queued(
    admin_client, worker, hooks, fake_zendesk
):
    """The webhook of ticket 5149 links to Ann and to note out:1; ticket 5141's has no note."""
    ann_wrote_twice(hooks, worker)
    page = admin_client.get("/admin/deliveries/in/2").data.decode()
    assert '<a href="/admin/customers/1">Ann Example</a>' in page
    assert '<a href="/admin/deliveries/out/1">out:1</a>' in page
    assert "summary on zendesk 5149, done" in page
    first = admin_client.get("/admin/deliveries/in/1").data.decode()
    assert "/admin/deliveries/out/" not in first and "zendesk ticket 5141" in first


def test_a_note_links_back_to_its_webhook_and_its_customer(
    admin_client, worker, hooks, fake_zendesk
):
    """Note out:1 names the ticket that caused it, links to webhook in:2 and to Ann."""
    ann_wrote_twice(hooks, worker)
    page = admin_client.get("/admin/deliveries/out/1").data.decode()
    assert '<a href="/admin/deliveries/in/2">in:2</a>' in page
    assert '<a href="/admin/customers/1">Ann Example</a>' in page
    assert "zendesk ticket 5149" in page
    assert "/admin/deliveries/in/1" not in page


def test_each_failed_try_shows_in_the_trail_with_its_error(
    admin_client, worker, hooks, fake_zendesk, core
):
    """A 503 on the first try is in the trail as a failed step, then the processed step."""
    fake_zendesk.fail_next(503, body={"error": "Unavailable"})
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    with core.engine.begin() as conn:  # Zendesk's pause after its 503 is over
        conn.execute(update(upstream_state).values(blocked_until=None))
        conn.execute(update(deliveries).values(next_attempt_at=utcnow()))
    core.health._forget()
    worker.run_once()  # its deliveries wait until a probe finds Zendesk back
    worker.drain()
    page = admin_client.get("/admin/deliveries/in/1").data.decode()
    trail = page[page.index("Processing trail") : page.index("<h2>Payload")]
    assert trail.index('class="error">failed') < trail.index("processed")
    assert "503" in trail
    assert "done, after 1 failed try" in page


def test_a_trail_keeps_the_last_ten_failed_tries():
    """Failed tries beyond ten drop the oldest; other steps stay."""
    trail = add_trail("[]", "replayed")
    for n in range(12):
        trail = add_failure(trail, f"try {n}")
    steps = json.loads(trail)
    assert [s["detail"] for s in steps] == ["", *[f"try {n}" for n in range(2, 12)]]


def test_statuses_read_as_the_command_line_says_them(admin_client, worker, hooks):
    """A new webhook is "pending, not tried yet", one the mapping fails "dead, 1 failed try"."""
    hooks.cti(cti_body("newCall.json"))
    assert "pending, not tried yet" in admin_client.get("/admin/deliveries/in/1").data.decode()
    hooks.zendesk(mail_ticket_with_bad_date())
    worker.drain()
    assert "dead, 1 failed try" in admin_client.get("/admin/deliveries/in/2").data.decode()
    assert ">done<" in admin_client.get("/admin/deliveries/").data.decode()
    assert [status_words("done", 0), status_words("pending", 2)] == [
        "done",
        "pending, 2 failed tries",
    ]


def test_a_case_is_found_by_its_id_and_by_its_case_number(
    database_url, fake_zendesk, make_config, admin_for, hooks_for
):
    """A Salesforce case's webhook is found by the case's Id and by its CaseNumber."""
    from devkit.simulators.salesforce import FakeSalesforce
    from middleware.admin.accounts import create_admin
    from middleware.installation import build_installation
    from middleware.process.worker import Worker
    from middleware.web.app import create_app
    from tests.values import ADMIN_PASSWORD

    session = "00D000000000001!AQ.fixed.session.for.tests"
    with FakeSalesforce(session_id=session) as salesforce:
        settings = {"organization_id": salesforce.org_id, "instance_url": salesforce.url,
                    "session_id": session}  # fmt: skip
        built = build_installation(make_config(database_url, fake_zendesk.url,
                                               salesforce=settings))  # fmt: skip
        try:
            client = create_app(core=built).test_client()
            create_admin(built.engine, "ada", ADMIN_PASSWORD)
            admin_for(client).log_in()
            contact = salesforce.add_contact("Ann", "Example", email="ann.example@example.com")
            cases = [salesforce.add_case(f"Case {n}", contact, "Phone") for n in range(2)]
            for case in cases:
                message = salesforce.outbound_message([("Case", salesforce.case_fields(case))])
                assert hooks_for(client).salesforce(message).status_code == 200
            Worker(built, name="test").drain()
            number = salesforce.case(cases[0])["CaseNumber"]
            assert listed(client, q=cases[0]) == ["in:1"]
            assert listed(client, q=number) == ["in:1"]
            page = client.get("/admin/deliveries/", query_string={"q": number}).data.decode()
            assert f"Webhooks that carried salesforce case {number}." in page
        finally:
            built.dispose()


def test_the_command_line_lists_the_status_words_the_pages_show(
    admin_client, worker, hooks, core, database_url, tmp_path, capsys
):
    """`carryover deliveries list` says "dead, 1 failed try" and "pending, not tried yet" too."""
    from middleware.cli import main

    hooks.zendesk(mail_ticket_with_bad_date())
    worker.drain()
    hooks.cti(cti_body("newCall.json"))
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {database_url}\n")
    assert main(["deliveries", "list", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"in:2 +cti +pending, not tried yet +\[", lines[1])
    assert re.match(r"in:1 +zendesk +dead, 1 failed try +events\.ticket\.created", lines[2])
    assert "dead, 1 failed try" in admin_client.get("/admin/deliveries/").data.decode()


def test_migration_0013_links_webhooks_processed_before_it_by_their_trails(
    admin_client, worker, hooks, core, fake_zendesk
):
    """Webhooks processed before 0013 are found by their ticket once it is applied."""
    from alembic import command

    from middleware.store.tables import _alembic_config, upgrade

    ann_wrote_twice(hooks, worker)
    command.downgrade(_alembic_config(core.engine), "0012")
    upgrade(core.engine)
    assert listed(admin_client, q="5141") == ["in:1"]
    assert listed(admin_client, q="5149") == ["in:2"]
    assert (
        '<a href="/admin/deliveries/out/1">out:1</a>'
        in admin_client.get("/admin/deliveries/in/2").data.decode()
    )


def test_replaying_a_row_that_does_not_exist_goes_back_saying_so(admin_client, admin):
    """No such delivery: a redirect to the list with the reason, not an error page."""
    token = admin.csrf(admin_client.get("/admin/deliveries/").data)
    response = admin_client.post("/admin/deliveries/in/999/replay", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/admin/deliveries/?direction=in")
    page = admin_client.get(response.headers["Location"]).data.decode()
    assert "Not queued: there is no delivery 999." in page
