"""The admin session in a browser: login, logout, CSRF refusals, and no asset from elsewhere."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.actions import CodeEditor
from tests.browser.live_server import LiveServer
from tests.values import ADMIN_PASSWORD

LOGIN_URL = re.compile(r"/admin/login(\?|$)")


@pytest.mark.usefixtures("ada")
def test_wrong_password_stays_on_login_right_one_reaches_overview_logout_ends_it(
    page: Page,
) -> None:
    """A wrong password is refused on the login form, the right one opens the overview, and
    logging out ends the session."""
    page.goto("/admin/")
    expect(page).to_have_url(LOGIN_URL)
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page).to_have_url(LOGIN_URL)
    expect(page.get_by_label("Username")).to_have_value("ada")
    expect(page.get_by_role("link", name="Overview")).to_have_count(0)

    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("header.top")).to_contain_text("ada")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(LOGIN_URL)
    page.goto("/admin/deliveries/")
    expect(page).to_have_url(LOGIN_URL)  # the session is gone, not just the page
    expect(page.get_by_role("heading", name="Carryover admin")).to_be_visible()


def test_a_form_posted_without_its_csrf_token_is_refused_and_changes_nothing(
    admin_page: Page, code_editor: CodeEditor
) -> None:
    """A save whose token field was removed gets the 400 page; the mapping stays unsaved."""
    page = admin_page
    page.goto("/admin/mappings/zendesk")
    shipped = page.locator("#document").input_value()
    code_editor.fill(shipped.replace("    mail: email\n", "    mail: sms\n", 1))
    page.locator("#mapping-form input[name=csrf_token]").evaluate("field => field.remove()")
    # The editor's live preview POSTs too (after each edit): wait for the save's answer.
    saved = "/admin/mappings/zendesk"
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(saved)
    ) as posted:
        page.get_by_role("button", name="Save as a new version").click()
    assert posted.value.status == 400
    expect(page.get_by_role("heading", name="400 Bad Request")).to_be_visible()
    expect(page.locator("p.error")).to_contain_text("security token is missing")

    page.goto("/admin/mappings/zendesk")
    expect(page.get_by_text("None saved here yet")).to_be_visible()
    expect(page.locator("#document")).to_have_value(re.compile(r"\n    mail: email\n"))


def test_logout_without_the_token_is_refused_and_the_session_goes_on(admin_page: Page) -> None:
    """A forged logout (the session's cookie, no token) answers 400 and logs nobody out."""
    page = admin_page
    response = page.request.post("/admin/logout")
    assert response.status == 400
    assert "security token is missing" in response.text()
    page.goto("/admin/customers/")
    expect(page.get_by_role("heading", name="Customers")).to_be_visible()


def test_an_admin_page_loads_every_asset_from_carryover_itself(
    admin_page: Page, blocked_requests: list[str], live_server: LiveServer
) -> None:
    """The overview fetches its stylesheet from the app and nothing from any other host."""
    page = admin_page
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    with page.expect_response(re.compile(r"/admin/static/admin\.css$")) as stylesheet:
        page.goto("/admin/")
    assert stylesheet.value.ok
    expect(page.get_by_role("heading", name="Traffic")).to_be_visible()
    page.wait_for_load_state("load")
    assert asked and all(url.startswith(live_server.url + "/") for url in asked), asked
    assert blocked_requests == []
    # The guard itself: anything from another host is refused before it leaves the machine.
    # Asked from a blank page: on Carryover's own, the content policy refuses it even sooner.
    page.goto("about:blank")
    outcome = page.evaluate(
        "fetch('https://cdn.example.com/lib.js').then(() => 'loaded', () => 'refused')"
    )
    assert outcome == "refused"
    assert blocked_requests == ["https://cdn.example.com/lib.js"]
