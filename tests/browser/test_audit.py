"""The Admins page and the audit log, in a browser: changes made, confirmed, and seen logged."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from playwright.sync_api import Browser, Page, expect

from middleware.admin.accounts import create_admin
from middleware.installation import Installation
from tests.actions import AdminActions
from tests.browser.live_server import LiveServer

GRACE_PASSWORD = "another long passphrase"


def log_in(page: Page, username: str, password: str) -> None:
    """Fill in and send the login form."""
    page.goto("/admin/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_changes_made_in_the_browser_show_in_the_audit_log(
    admin_page: Page, core: Installation, ann: None
) -> None:
    """Ada tests Zendesk, sets Ann's channels and disables Grace: the log shows all three."""
    create_admin(core.engine, "grace", GRACE_PASSWORD)
    page = admin_page
    page.goto("/admin/integrations/zendesk")
    page.get_by_role("button", name="Test the connection").click()
    expect(page.get_by_role("status")).to_contain_text("Zendesk")

    page.goto("/admin/customers/1")
    page.get_by_label("sms").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Preferred channels saved.")

    page.get_by_role("link", name="Admins").click()
    grace = page.get_by_role("row", name=re.compile(r"^grace "))
    expect(grace).to_contain_text("can log in")
    grace.get_by_role("link", name="Disable…").click()
    expect(page.get_by_role("heading")).to_have_text("Disable the admin grace?")
    page.get_by_role("button", name="Disable grace").click()
    expect(page.get_by_role("status")).to_have_text("grace is disabled; 0 open session(s) ended.")
    expect(grace).to_contain_text("disabled since")

    page.get_by_role("link", name="Audit log", exact=True).click()
    rows = page.locator("table.audit tr")
    expect(rows).to_have_count(4)  # the heading and three changes, newest first
    expect(rows.nth(1)).to_contain_text(re.compile(r"UTC\s*ada\s*Admin disabled\s*admin grace"))
    expect(rows.nth(2)).to_contain_text(
        re.compile(r"Preferred channels set\s*customer 1 \(Ann Example\)\s*sms")
    )
    expect(rows.nth(3)).to_contain_text(
        re.compile(r"Connection tested\s*integration zendesk\s*passed")
    )
    page.get_by_label("What").select_option(label="Admin disabled")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"action=admin\.disable"))
    expect(rows).to_have_count(2)
    expect(page.get_by_text("1 change.")).to_be_visible()


def test_a_disabled_admin_is_refused_and_an_unlock_lets_a_locked_out_admin_in(
    admin_page: Page, core: Installation, browser: Browser, live_server: LiveServer,
    client: FlaskClient,
) -> None:  # fmt: skip
    """Grace, locked out, gets in once Ada unlocks her; disabled, she is refused."""
    create_admin(core.engine, "grace", GRACE_PASSWORD)
    for _ in range(5):
        AdminActions(client).log_in("grace", "not the password")
    other = browser.new_context(base_url=live_server.url)
    try:
        grace_page = other.new_page()
        log_in(grace_page, "grace", GRACE_PASSWORD)
        expect(grace_page.get_by_role("alert")).to_have_text(
            "Too many failed logins; try again later."
        )

        page = admin_page
        page.goto("/admin/admins/")
        row = page.get_by_role("row", name=re.compile(r"^grace "))
        expect(row).to_contain_text("locked out")
        row.get_by_role("link", name="Unlock…").click()
        page.get_by_role("button", name="Unlock grace").click()
        expect(page.get_by_role("status")).to_contain_text("grace is unlocked")
        expect(row).not_to_contain_text("locked out")

        log_in(grace_page, "grace", GRACE_PASSWORD)
        expect(grace_page.get_by_role("heading", name="Overview")).to_be_visible()

        row.get_by_role("link", name="Disable…").click()
        page.get_by_role("button", name="Disable grace").click()
        expect(page.get_by_role("status")).to_contain_text("1 open session(s) ended")
        grace_page.goto("/admin/")
        expect(grace_page.get_by_role("button", name="Log in")).to_be_visible()
        log_in(grace_page, "grace", GRACE_PASSWORD)
        expect(grace_page.get_by_role("alert")).to_have_text(
            "This admin account is disabled; another admin can enable it again."
        )
    finally:
        other.close()

    page.goto("/admin/audit/")
    expect(page.locator("table.audit tr").nth(1)).to_contain_text("Admin disabled")
    expect(page.locator("table.audit tr").nth(2)).to_contain_text("Admin unlocked")
