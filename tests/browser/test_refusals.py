"""An admin in a browser after a webhook was refused: the overview and the integration say why."""

from __future__ import annotations

import requests
from playwright.sync_api import Page, expect

from middleware.installation import Installation
from tests.browser.live_server import LiveServer
from tests.payloads import fixture_bytes, zendesk_headers

WRONG_SECRET = "bm90IHRoZSBzZWNyZXQgb2YgdGhpcyB3ZWJob29r"


def test_a_badly_signed_webhook_shows_on_the_overview_and_the_integration(
    admin_page: Page, live_server: LiveServer, core: Installation
) -> None:
    """A webhook signed with a wrong secret is refused, then shown with what to check."""
    body = fixture_bytes("ticket_created__mail.json")
    headers = zendesk_headers(body, secret=WRONG_SECRET)
    response = requests.post(f"{live_server.url}/hooks/zendesk", data=body, headers=headers,
                             timeout=10)  # fmt: skip
    assert response.status_code == 401
    core.refusals.flush()  # what the timer writes within a second

    page = admin_page
    page.reload()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Zendesk refused 1 delivery in the last 24 h")
    expect(alert).to_contain_text("signature does not match")
    expect(alert).to_contain_text("Check webhook_secret is Zendesk's signing secret")
    integrations = page.locator("table", has=page.get_by_role("columnheader", name="Webhook URL"))
    expect(integrations).to_contain_text("1 refused in the last 24 h — signature does not match")

    integrations.get_by_role("link", name="1 refused in the last 24 h").click()
    expect(page).to_have_url(f"{live_server.url}/admin/integrations/zendesk#refusals")
    section = page.locator("#refusals")
    expect(section.get_by_role("heading", name="Refused deliveries")).to_be_visible()
    reasons = section.locator("table.refusals")
    expect(reasons).to_contain_text("signature does not match")
    expect(reasons).to_contain_text("Reveal secret")
    expect(section.locator("table.refusals-recent")).to_contain_text("127.0.0.1")
    assert headers["X-Zendesk-Webhook-Signature"] not in page.content()
