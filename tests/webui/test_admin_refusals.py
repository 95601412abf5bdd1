"""Refused deliveries on the admin pages: the integration's section and the overview's line."""

from __future__ import annotations

import html as markup
import re
from datetime import timedelta

from middleware.installation import build_installation
from middleware.store.tables import refusal_counts, refusals, utcnow
from middleware.web.app import create_app
from tests.payloads import fixture_bytes, zendesk_headers

WRONG_SECRET = "bm90IHRoZSBzZWNyZXQgb2YgdGhpcyB3ZWJob29r"


def refuse_zendesk(client, times: int = 1) -> None:
    """Post a Zendesk delivery signed with a wrong secret, as a misconfigured webhook does."""
    body = fixture_bytes("ticket_created__mail.json")
    headers = zendesk_headers(body, secret=WRONG_SECRET)
    for _ in range(times):
        assert client.post("/hooks/zendesk", data=body, headers=headers).status_code == 401


def text_of(html: bytes) -> str:
    """Return a page's text without tags, spaces collapsed."""
    return markup.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html.decode())).strip())


def test_the_integration_page_shows_refusals_with_what_to_check(admin_client, core):
    """The page counts the refusals by reason, says what to check and lists the last ones."""
    refuse_zendesk(admin_client, times=3)
    core.refusals.flush()
    page = admin_client.get("/admin/integrations/zendesk")
    assert page.status_code == 200
    text = text_of(page.data)
    assert "Refused deliveries" in text
    assert "Refused 3 refused in the last 24 h — signature does not match" in text
    assert ("signature does not match 3 3") in text
    assert "check webhook_secret is Zendesk's signing secret of this webhook" in text
    assert text.count("signature does not match 127.0.0.1") == 3
    assert 'role="alert"' in page.data.decode()


def test_an_integration_without_refusals_says_so(admin_client, core):
    """With nothing refused the section says none, and shows no alert."""
    text = text_of(admin_client.get("/admin/integrations/cti").data)
    assert "Refused deliveries None in the last 30 days." in text
    assert "Refused none" in text


def test_the_overview_names_the_integration_and_the_reason(admin_client, core):
    """The overview says how many were refused in the last 24 h, and why, as an alert."""
    refuse_zendesk(admin_client, times=2)
    core.refusals.flush()
    page = admin_client.get("/admin/")
    html = page.data.decode()
    text = text_of(page.data)
    assert "Zendesk refused 2 deliveries in the last 24 h" in text
    assert "2 refused in the last 24 h — signature does not match" in text
    assert 'href="/admin/integrations/zendesk#refusals"' in html
    assert re.search(r'<p class="alert" role="alert"><strong>Zendesk refused', html)
    listing = text_of(admin_client.get("/admin/integrations/").data)
    assert "2 refused in the last 24 h — signature does not match" in listing


def test_older_refusals_are_no_alert(admin_client, core):
    """Refusals of two days ago stay on the integration page but raise no alert anywhere."""
    then = utcnow() - timedelta(days=2)
    with core.engine.begin() as conn:
        conn.execute(refusal_counts.insert().values(
            plugin="zendesk", reason="signature", hour=then.replace(minute=0, second=0,
            microsecond=0), count=4, last_at=then))  # fmt: skip
        conn.execute(refusals.insert().values(plugin="zendesk", reason="signature", at=then,
                                              address="192.0.2.1"))  # fmt: skip
    overview = admin_client.get("/admin/").data.decode()
    assert 'role="alert"' not in overview and "refused in the last 24 h —" not in overview
    page = admin_client.get("/admin/integrations/zendesk").data.decode()
    assert 'class="alert"' not in page
    text = text_of(page.encode())
    assert "signature does not match 0 4" in text and "192.0.2.1" in text


def test_times_are_in_the_installation_timezone(database_url, make_config, admin_for):
    """The refusal's time is shown in the configured timezone, not in UTC."""
    from middleware.admin.accounts import create_admin
    from tests.values import ADMIN_PASSWORD, UNREACHABLE_URL

    core = build_installation(make_config(database_url, UNREACHABLE_URL,
                                          timezone="Asia/Kolkata"))  # fmt: skip
    try:
        client = create_app(core=core).test_client()
        create_admin(core.engine, "ada", ADMIN_PASSWORD)
        admin_for(client).log_in()
        refuse_zendesk(client)
        core.refusals.flush()
        text = text_of(client.get("/admin/integrations/zendesk").data)
        stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST"
        assert re.search(stamp + r" signature does not match 127\.0\.0\.1", text)
    finally:
        core.dispose()
