"""Connecting an integration from a browser: type the credentials, save, test the connection."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from devkit.simulators.salesforce import FakeSalesforce
from devkit.simulators.zendesk import FakeZendesk

SF_USER = "carryover@example.com"
SF_PASSWORD = "fake-org-password"
SF_TOKEN = "fake-org-security-token"


@pytest.fixture
def fake_salesforce() -> Iterator[FakeSalesforce]:
    """A fake org that accepts a username/password login."""
    with FakeSalesforce(username=SF_USER, password=SF_PASSWORD, security_token=SF_TOKEN) as fake:
        yield fake


def test_salesforce_is_connected_and_tested_from_the_browser_alone(
    admin_page: Page, fake_salesforce: FakeSalesforce
) -> None:
    """A bad org id is refused beside its field; the right settings connect and are tested."""
    page = admin_page
    page.get_by_role("link", name="Integrations").click()
    page.get_by_role("link", name="Salesforce Service Cloud").click()
    expect(page.get_by_role("heading", name="Salesforce Service Cloud")).to_contain_text(
        "not connected"
    )
    page.get_by_label("Organization ID").fill("not-an-org")
    page.get_by_label("Instance URL").fill("acme.my.salesforce.com")
    page.get_by_role("button", name="Save and connect").click()
    expect(page.get_by_role("alert")).to_contain_text("Not saved: 2 settings need a change.")
    expect(page.locator("#error-organization_id")).to_be_visible()
    expect(page.locator("#error-instance_url")).to_have_text(
        "'acme.my.salesforce.com' lacks its scheme: write https://acme.my.salesforce.com"
    )
    expect(page.get_by_label("Instance URL")).to_have_value("acme.my.salesforce.com")  # kept

    for label, value in {
        "Organization ID": fake_salesforce.org_id, "Instance URL": fake_salesforce.url,
        "Login URL": fake_salesforce.url, "Username": SF_USER, "Password": SF_PASSWORD,
        "Security token": SF_TOKEN,
    }.items():  # fmt: skip
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Save and connect").click()
    answered = f"Salesforce answered at {fake_salesforce.url.removeprefix('http://')}"
    expect(page.get_by_role("status")).to_contain_text(
        f"Salesforce Service Cloud is connected, and the connection test passed: {answered}"
    )
    expect(page.locator("#connection-state")).to_have_text("connected")
    expect(page.locator("#setting-password")).to_have_value("")  # never sent back
    assert SF_PASSWORD not in page.content() and SF_TOKEN not in page.content()

    page.get_by_role("button", name="Test the connection").click()
    expect(page.get_by_role("status")).to_contain_text(answered)
    assert fake_salesforce.logins >= 1


def test_a_wrong_token_fails_the_connection_test_and_the_heading_is_not_green(
    admin_page: Page, fake_zendesk: FakeZendesk
) -> None:
    """Zendesk refuses the token: the heading, an alert and the latest error say so, in red;
    a test that passes later turns it green again."""
    page = admin_page
    page.goto("/admin/integrations/zendesk")
    expect(page.locator("#connection-state")).to_have_text("connected")
    fake_zendesk.fail_next(401, body={"error": "Couldn't authenticate you"})
    page.get_by_role("button", name="Test the connection").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Connection test failed: Zendesk answered 401"
    )
    state = page.locator("#connection-state")
    expect(state).to_have_text("not working")
    expect(state).to_have_class("error")
    expect(page.get_by_role("alert")).to_contain_text("Zendesk is not working")
    latest = page.get_by_role("row", name=re.compile(r"^Latest error"))
    expect(latest).to_contain_text("Zendesk answered 401")
    page.goto("/admin/integrations/")
    expect(page.get_by_role("row", name=re.compile(r"^Zendesk"))).to_contain_text("not working")

    page.goto("/admin/integrations/zendesk")
    page.get_by_role("button", name="Test the connection").click()
    expect(page.get_by_role("status")).to_contain_text("Zendesk answered as")
    expect(page.locator("#connection-state")).to_have_text("connected")
    expect(page.get_by_role("alert")).to_have_count(0)


def test_the_webhook_url_says_when_the_tool_cannot_reach_it_and_copies_in_one_click(
    admin_page: Page,
) -> None:
    """The test installation's public_url is the default, on this machine only: the page
    says Zendesk cannot reach it and what to set; Copy puts the exact URL on the clipboard."""
    page = admin_page
    origin = page.url.split("/admin")[0]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
    page.goto("/admin/integrations/zendesk")
    row = page.get_by_role("row", name=re.compile(r"^Webhook URL"))
    expect(row.get_by_role("note")).to_contain_text(
        "Zendesk may not reach this URL: 127.0.0.1 is this machine only"
    )
    expect(row.get_by_role("note")).to_contain_text("set public_url to the https:// address")
    row.get_by_role("button", name="Copy").click()
    expect(row.get_by_role("button", name="Copied")).to_be_visible()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.locator("#webhook-url").inner_text() and copied.endswith("/hooks/zendesk")
