"""Integrations in the admin UI: state, masked secrets, setup steps, the connection test."""

from __future__ import annotations

import re

from tests.payloads import fixture_bytes
from tests.values import TWILIO_TOKEN, ZENDESK_SECRET, ZENDESK_TOKEN
from webui.integrations import masked


def test_every_installed_integration_is_listed_with_its_state(admin_client, hooks):
    """Configured ones say so, with their last webhook; the others say they are off."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    page = admin_client.get("/admin/integrations/").data.decode()
    for title in ("Zendesk", "Salesforce Service Cloud", "Twilio"):
        assert title in page
    assert "not connected" in page  # Salesforce is off in this installation
    assert page.count(" UTC</td>") >= 1  # Zendesk's last webhook time, in the zone (UTC)


def test_the_detail_shows_setup_and_webhook_url_and_never_a_whole_secret(admin_client):
    """Secrets show as set, with length and at most their last 4 characters."""
    page = admin_client.get("/admin/integrations/zendesk").data.decode()
    assert "http://127.0.0.1:8080/hooks/zendesk" in page
    assert "Admin Center" in page  # the setup steps
    assert ZENDESK_SECRET not in page and ZENDESK_TOKEN not in page
    assert f"set ({len(ZENDESK_SECRET)} characters, ending …{ZENDESK_SECRET[-4:]})" in page
    assert "set (10 characters)" in page  # a short token does not even show its end
    twilio = admin_client.get("/admin/integrations/twilio").data.decode()
    assert TWILIO_TOKEN not in twilio


def test_masking_shows_nothing_of_short_secrets():
    """A secret under 16 characters shows only its length."""
    assert masked("") == "not set" and masked(None) == "not set"
    assert masked("short-secret") == "set (12 characters)"
    assert masked("a-much-longer-secret-value") == "set (26 characters, ending …alue)"


def test_the_connection_test_calls_the_real_api_and_says_who_answered(
    admin_client, admin, fake_zendesk
):
    """Zendesk's test names the agent the token belongs to."""
    token = admin.csrf(admin_client.get("/admin/integrations/zendesk").data)
    response = admin_client.post("/admin/integrations/zendesk/test", data={"csrf_token": token},
                                 follow_redirects=True)  # fmt: skip
    assert "Zendesk answered as Carryover Bot &lt;bot@example.com&gt;, role agent" in (
        response.data.decode()
    )


def test_a_failing_connection_test_says_why(admin_client, fake_zendesk, admin):
    """A refused token is reported with Zendesk's answer."""
    fake_zendesk.fail_next(401, body={"error": "Couldn't authenticate you"})
    token = admin.csrf(admin_client.get("/admin/integrations/zendesk").data)
    response = admin_client.post("/admin/integrations/zendesk/test", data={"csrf_token": token},
                                 follow_redirects=True)  # fmt: skip
    page = response.data.decode()
    assert "Connection test failed: Zendesk answered 401" in page


def test_an_integration_without_an_api_says_there_is_nothing_to_test(admin_client, admin):
    """Twilio only sends webhooks to Carryover."""
    token = admin.csrf(admin_client.get("/admin/integrations/twilio").data)
    response = admin_client.post("/admin/integrations/twilio/test", data={"csrf_token": token},
                                 follow_redirects=True)  # fmt: skip
    assert "only sends webhooks" in response.data.decode()


def test_the_connection_test_needs_the_csrf_token(admin_client):
    """A forged test request is refused."""
    assert admin_client.post("/admin/integrations/zendesk/test").status_code == 400


def test_the_webhook_url_warning_names_what_keeps_the_tool_out():
    """Loopback and private addresses, and plain HTTP, are said; a public https URL is not."""
    from webui.integrations import reach_warning

    assert "this machine only" in (reach_warning("http://127.0.0.1:8080", "Zendesk") or "")
    assert "this machine only" in (reach_warning("https://localhost", "Zendesk") or "")
    assert "private network" in (reach_warning("https://10.0.0.5", "Twilio") or "")
    assert "not HTTPS" in (reach_warning("http://carryover.example.com", "Twilio") or "")
    assert reach_warning("https://carryover.example.com/support", "Zendesk") is None


def test_stopping_an_import_that_does_not_run_goes_back_saying_so(admin_client, admin):
    """Nothing to stop: a redirect to the import section with the reason, not a 409 page."""
    token = admin.csrf(admin_client.get("/admin/integrations/zendesk").data)
    response = admin_client.post("/admin/integrations/zendesk/history/stop",
                                 data={"csrf_token": token})  # fmt: skip
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/admin/integrations/zendesk#history")
    page = admin_client.get("/admin/integrations/zendesk").data.decode()
    assert "Nothing to stop: no import of this integration runs in this web process" in page


def test_a_failed_connection_test_turns_every_page_from_green_until_one_passes(
    admin_client, admin, fake_zendesk
):
    """After a 401 the page, the list and the overview say "not working"; a pass clears it."""
    fake_zendesk.fail_next(401, body={"error": "Couldn't authenticate you"})
    token = admin.csrf(admin_client.get("/admin/integrations/zendesk").data)
    admin_client.post("/admin/integrations/zendesk/test", data={"csrf_token": token})
    page = admin_client.get("/admin/integrations/zendesk").data.decode()
    assert 'id="connection-state">not working</span>' in page
    assert "<strong>Zendesk is not working</strong>" in page and "Zendesk answered 401" in page
    listing = admin_client.get("/admin/integrations/").data.decode()
    assert '<span class="error">not working</span>' in listing
    overview = admin_client.get("/admin/").data.decode()
    assert '<td class="error">not working</td>' in overview
    assert "<strong>Zendesk is not working</strong>" in overview

    admin_client.post("/admin/integrations/zendesk/test", data={"csrf_token": token})
    page = admin_client.get("/admin/integrations/zendesk").data.decode()
    assert 'id="connection-state">connected</span>' in page and "is not working" not in page
    assert '<td class="ok">connected</td>' in admin_client.get("/admin/").data.decode()


def test_a_connection_test_during_a_pause_is_not_sent_and_says_so(
    admin_client, admin, fake_zendesk
):
    """After a 429 the state is "paused", not "not working"; a test then sends nothing."""
    fake_zendesk.fail_next(429, headers={"Retry-After": "60"}, body={"error": "TooManyRequests"})
    token = admin.csrf(admin_client.get("/admin/integrations/zendesk").data)
    admin_client.post("/admin/integrations/zendesk/test", data={"csrf_token": token})
    page = admin_client.get("/admin/integrations/zendesk").data.decode()
    assert 'id="connection-state">paused</span>' in page
    calls = fake_zendesk.traffic().api
    admin_client.post("/admin/integrations/zendesk/test", data={"csrf_token": token})
    page = admin_client.get("/admin/integrations/zendesk").data.decode()
    assert "Not tested: Zendesk paused (Zendesk answered 429)" in page
    assert fake_zendesk.traffic().api == calls == 1  # nothing sent while paused


def test_the_detail_says_what_an_integration_does_and_when_in_words(admin_client, hooks):
    """Capabilities in words, not enum names; the last webhook in the installation's zone."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    page = admin_client.get("/admin/integrations/zendesk").data.decode()
    assert "receives its webhooks, looks customers up" in page and "write_note" not in page
    assert re.search(r"<th>Last webhook</th><td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td>", page)


def test_the_overview_names_integrations_by_title_in_the_traffic_chart(admin_client, hooks):
    """The chart's legend says "Zendesk", as the rest of the page does."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    page = admin_client.get("/admin/").data.decode()
    chart = page[page.index("Webhooks a minute") :]
    assert ">Zendesk<" in chart and ">zendesk<" not in chart
