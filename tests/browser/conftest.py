"""Fixtures of the browser tests: the real app on a local port, and Debian's headless Chromium.

One Playwright and one browser serve the whole session; each test gets a fresh context (its
own cookies), whose requests to any host but 127.0.0.1 are refused, and which fails the test
when a page breaks its Content-Security-Policy. Webhooks are posted with the Flask test client
of the same installation (Twilio signs the default public_url, which the test client matches),
while the browser talks to the live server: both share the store.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Route,
    expect,
    sync_playwright,
)

from devkit.simulators.zendesk import FakeZendesk
from middleware.admin.accounts import Admin, create_admin
from middleware.installation import Installation, build_installation
from middleware.process.worker import Worker
from tests.actions import CodeEditor, ConfigFactory, Hooks
from tests.browser.live_server import LiveServer
from tests.payloads import fixture_bytes
from tests.values import ADMIN_PASSWORD

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright never downloads a browser here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking"]  # fmt: skip
# Every URL that is not on 127.0.0.1: the context aborts them (no CDN, no telemetry).
NOT_LOCAL = re.compile(r"^(?!https?://127\.0\.0\.1[:/])")
# Runs in every frame before the page's own scripts: a violation of the page's content policy
# is logged, as Chromium logs those it reports itself ("… violates the following Content
# Security Policy directive …").
REPORT_POLICY_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`Content Security Policy violation: ${event.violatedDirective} refused `
                + (event.blockedURI || "inline code"));
});
"""


@pytest.fixture
def core(
    database_url: str, fake_zendesk: FakeZendesk, make_config: ConfigFactory
) -> Iterator[Installation]:
    """Build the installation of tests/conftest.py, with pops that look at the store often.

    A short poll lets an open pop stream notice within a moment that its browser is gone.
    """
    config = make_config(database_url, fake_zendesk.url, phone=True, pop={"poll_s": 0.2})
    built = build_installation(config)
    yield built
    built.dispose()


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    """Serve the web app of the test installation on 127.0.0.1 in a background thread."""
    server = LiveServer(app).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """Start Playwright once per session (only when Debian's Chromium is there to drive)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make test installs it)")
    expect.set_options(timeout=10_000)  # a loaded CI machine can be slow to render
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Launch Debian's Chromium headless, once per session."""
    launched = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    yield launched
    launched.close()


@pytest.fixture
def blocked_requests() -> list[str]:
    """Collect the URLs the browser asked for outside 127.0.0.1 (each one refused)."""
    return []


@pytest.fixture
def policy_violations() -> list[str]:
    """Collect the console messages about content policy violations (a test expecting one
    clears the list once it has checked it)."""
    return []


@pytest.fixture
def browser_context(
    browser: Browser,
    live_server: LiveServer,
    blocked_requests: list[str],
    policy_violations: list[str],
) -> Iterator[BrowserContext]:
    """Open a fresh context on the live server that can reach no other host."""
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(10_000)

    def refuse(route: Route) -> None:
        blocked_requests.append(route.request.url)
        route.abort("blockedbyclient")

    def note_violation(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            policy_violations.append(message.text)

    context.route(NOT_LOCAL, refuse)
    context.add_init_script(REPORT_POLICY_VIOLATIONS)
    context.on("console", note_violation)
    yield context
    context.close()
    assert policy_violations == [], "a page broke its content policy"


@pytest.fixture
def page(browser_context: BrowserContext) -> Page:
    """Open a tab in the test's context."""
    return browser_context.new_page()


@pytest.fixture
def ada(core: Installation) -> Admin:
    """Create the admin Ada (her password is ADMIN_PASSWORD)."""
    return create_admin(core.engine, "ada", ADMIN_PASSWORD)


@pytest.fixture
def admin_page(ada: Admin, page: Page) -> Page:
    """Return a tab in which Ada logged in through the login form."""
    page.goto("/admin/login")
    page.get_by_label("Username").fill(ada.username)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return page


@pytest.fixture
def code_editor(admin_page: Page) -> CodeEditor:
    """Return the editor of the pages Ada opens in admin_page."""
    return CodeEditor(admin_page)


@pytest.fixture
def ann(client: FlaskClient, worker: Worker, hooks: Hooks) -> None:
    """Ann Example wrote an email (ticket 5141) and a Facebook message (ticket 5149)."""
    for name in ("ticket_created__mail.json", "ticket_created__facebook_message.json"):
        assert hooks.zendesk(fixture_bytes(name)).status_code == 200
    worker.drain()
