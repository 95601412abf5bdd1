"""The deliveries pages in a browser: search a ticket, open its webhook, follow its links."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.live_server import LiveServer


@pytest.mark.usefixtures("ann")
def test_a_ticket_searched_leads_to_its_webhook_its_customer_and_its_note(
    admin_page: Page, live_server: LiveServer
) -> None:
    """Search ticket 5149, open its webhook, go to Ann's profile, back, then to the note."""
    page = admin_page
    page.get_by_role("link", name="Deliveries").first.click()
    search = page.get_by_label("Search deliveries")
    expect(search).to_have_attribute("placeholder", re.compile(r"^Ticket or case id, .*call"))
    search.fill("5149")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("Webhooks that carried zendesk ticket 5149.")).to_be_visible()
    rows = page.get_by_role("row")
    expect(rows).to_have_count(2)  # the header and the one webhook
    expect(rows.nth(1)).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"))
    expect(rows.nth(1)).to_contain_text("done")

    rows.nth(1).get_by_role("link", name="in:2").click()
    expect(page.get_by_role("heading", name="Webhook in:2")).to_be_visible()
    expect(page.get_by_role("row", name=re.compile("^Status"))).to_contain_text("done")
    page.get_by_role("link", name="Ann Example").click()
    expect(page).to_have_url(f"{live_server.url}/admin/customers/1")
    expect(page.locator("h1")).to_contain_text("Ann Example")

    page.go_back()
    page.get_by_role("link", name="out:1").click()
    expect(page.get_by_role("heading", name="Note out:1")).to_be_visible()
    expect(page.get_by_role("row", name=re.compile("^Caused by"))).to_contain_text(
        "zendesk ticket 5149"
    )
    page.get_by_role("link", name="in:2").click()  # and back to the webhook that caused it
    expect(page.get_by_role("heading", name="Webhook in:2")).to_be_visible()


@pytest.mark.usefixtures("ann")
def test_a_customer_searched_lists_each_webhook_that_spoke_of_them(admin_page: Page) -> None:
    """Ann's phone as she would say it lists both her webhooks, newest first."""
    page = admin_page
    page.goto("/admin/deliveries/")
    page.get_by_label("Search deliveries").fill("(415) 555-0142")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_text("Webhooks that spoke of Ann Example.")).to_be_visible()
    links = page.get_by_role("link", name=re.compile(r"^in:\d+$"))
    expect(links).to_have_text(["in:2", "in:1"])
    expect(page.get_by_text("2 webhooks match, newest first")).to_be_visible()
