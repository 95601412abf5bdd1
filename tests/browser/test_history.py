"""An admin imports the past from an integration's page: the plan, a bar that advances page by
page without a reload, the summary, a refused token, stopping and continuing, a second start.

The fake Zendesk serves its export in pages of 20 tickets, and holds each page until the test
lets it through: every state the section shows is waited for, never slept for.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Locator, Page, expect
from sqlalchemy import select
from werkzeug.wrappers import Request, Response

from devkit.history import HistorySummary, seed_history
from devkit.simulators.salesforce import FakeSalesforce
from devkit.simulators.twilio_rest import FakeTwilio
from devkit.simulators.zendesk import EXPORT_PATH, FakeZendesk
from middleware.installation import Installation, build_installation
from middleware.process.backfill import parse_since
from middleware.store.tables import history_imports, interactions, writes
from tests.actions import ConfigFactory
from tests.values import TWILIO_TOKEN, ZENDESK_EMAIL, ZENDESK_TOKEN

PAGE_SIZE = 20  # tickets a page of the fake's export: three pages hold the history below
DELETED, BROKEN = 9001, 9002  # a deleted ticket, and one whose requester id is not an id
SF_SESSION = "00D000000000001!AQ.history.browser"
SUMMARY = "54 imported · 0 already imported · 1 skipped · 1 refused"


class ExportGate:
    """Hold each request of the fake's ticket export until the test lets it through."""

    def __init__(self, fake: FakeZendesk) -> None:
        self._pages = threading.Semaphore(0)
        self._open = threading.Event()
        answer = fake._api

        def held(request: Request, received: float) -> Response:
            if request.path == EXPORT_PATH and not self._open.is_set():
                self._pages.acquire()
            return answer(request, received)

        fake._api = held  # type: ignore[method-assign]

    def let_through(self) -> None:
        """Answer the next export request."""
        self._pages.release()

    def open(self) -> None:
        """Answer every export request from now on."""
        self._open.set()
        self._pages.release(100)


@pytest.fixture
def fake_zendesk(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeZendesk]:
    """Serve a fake Zendesk with no export limit, its export in pages of PAGE_SIZE tickets."""
    monkeypatch.setattr("devkit.simulators.zendesk.EXPORT_PAGE_MAX", PAGE_SIZE)
    with FakeZendesk(ZENDESK_EMAIL, ZENDESK_TOKEN, export_limit_per_minute=None) as fake:
        yield fake


@pytest.fixture
def fake_salesforce() -> Iterator[FakeSalesforce]:
    """Serve a fake Salesforce org that takes a session id."""
    with FakeSalesforce(session_id=SF_SESSION) as fake:
        yield fake


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """Serve a fake Twilio REST API for the test account."""
    with FakeTwilio(auth_token=TWILIO_TOKEN) as fake:
        yield fake


@pytest.fixture
def seeded(fake_zendesk: FakeZendesk) -> HistorySummary:
    """Seed 54 tickets of 20 customers from the last 60 days, plus a deleted and a broken one."""
    summary = seed_history(fake_zendesk, requesters=20, tickets=54, days=60, seed=7)
    someone = next(iter(fake_zendesk.users))
    fake_zendesk.add_ticket(DELETED, someone, "Spam", "deleted")
    fake_zendesk.add_ticket(BROKEN, someone, "Moved over from the old help desk")
    fake_zendesk.tickets[BROKEN]["requester_id"] = "old-desk-42"
    fake_zendesk.export_lag_seconds = 0  # the two just added are exported too
    return summary


@pytest.fixture
def core(
    database_url: str,
    fake_zendesk: FakeZendesk,
    fake_salesforce: FakeSalesforce,
    fake_twilio: FakeTwilio,
    make_config: ConfigFactory,
) -> Iterator[Installation]:
    """Connect Zendesk (its export unpaced: the fake sets the pace), Salesforce and Twilio."""
    config = make_config(
        database_url, fake_zendesk.url, zendesk_options={"export_requests_per_minute": 0},
        salesforce={"organization_id": fake_salesforce.org_id,
                    "instance_url": fake_salesforce.url, "session_id": SF_SESSION},
        phone=True, twilio={"account_sid": fake_twilio.account_sid, "api_url": fake_twilio.url},
    )  # fmt: skip
    built = build_installation(config)
    yield built
    built.dispose()


@pytest.fixture
def gate(fake_zendesk: FakeZendesk, app: Flask) -> Iterator[ExportGate]:
    """Hold the export's pages; at the end, let them through and wait for the import to end."""
    held = ExportGate(fake_zendesk)
    yield held
    held.open()
    for thread in threading.enumerate():
        if thread.name.startswith("carryover-history-"):
            thread.join(timeout=30)
    assert not app.extensions.get("history.jobs"), "an import still runs after the test"


def tickets_imported(core: Installation) -> list[str]:
    """Return the ids of the Zendesk tickets on the timeline, sorted."""
    with core.engine.connect() as conn:
        found = conn.execute(select(interactions.c.external_id).where(
            interactions.c.source == "zendesk", interactions.c.kind == "ticket"
        )).scalars()  # fmt: skip
        return sorted(found)


def rows(core: Installation, table: Any) -> int:
    """Count a table's rows."""
    with core.engine.connect() as conn:
        return len(conn.execute(select(table)).all())


def seeded_ids(fake: FakeZendesk) -> list[str]:
    """Return the ids of the fake's tickets an import keeps (not the deleted, not the broken)."""
    return sorted(str(i) for i in fake.tickets if i not in (DELETED, BROKEN))


def open_integration(page: Page, title: str) -> Locator:
    """Go to an integration's page from the menu; return its history section."""
    page.get_by_role("link", name="Integrations").click()
    page.get_by_role("link", name=title).first.click()
    expect(page.get_by_role("heading", name="Past history")).to_be_visible()
    return page.locator("#history")


def cell(section: Locator, heading: str) -> Locator:
    """Return the cell of the section's table row with the given heading."""
    found = section.locator("tr", has=section.page.get_by_role("rowheader", name=heading))
    return found.locator("td")


def bar_value(section: Locator) -> float:
    """Return how far the progress bar stands (0 to 1)."""
    return float(section.get_by_role("progressbar").get_attribute("value") or "nan")


def test_an_import_shows_its_plan_then_advances_page_by_page_to_its_summary(
    admin_page: Page,
    seeded: HistorySummary,
    gate: ExportGate,
    fake_zendesk: FakeZendesk,
    core: Installation,
) -> None:
    """The section says what an import reads since 90 days back; started, its bar advances
    with each page and ends with the counts and reasons, on the same page, and the store
    holds every ticket while nothing was written to Zendesk."""
    page = admin_page
    section = open_integration(page, "Zendesk")
    since = parse_since("90d")
    expect(section.locator("#history-plan")).to_have_text(
        f"Over the last 90 days (since {since:%Y-%m-%d}): reads 1,000 tickets a request, "
        "as fast as Zendesk answers"
    )
    expect(section.get_by_label("Since")).to_have_value("90d")

    page.get_by_role("button", name="Import history").click()
    expect(page.get_by_role("status")).to_have_text(
        f"Importing Zendesk history since {since:%Y-%m-%d}; nothing is written to it."
    )
    importing = cell(section, "Importing")
    expect(importing).to_contain_text("reading the first page · 0 records")
    expect(section.get_by_role("progressbar")).not_to_have_attribute("value", re.compile(".*"))
    expect(section.get_by_role("button", name="Stop the import")).to_be_visible()
    page.evaluate("window.notReloaded = true")

    gate.let_through()
    expect(importing).to_contain_text(f"· {PAGE_SIZE} records")
    first = bar_value(section)
    gate.let_through()
    expect(importing).to_contain_text(f"· {2 * PAGE_SIZE} records")
    second = bar_value(section)
    assert 0 < first < second < 1
    gate.let_through()

    expect(cell(section, "Last import")).to_contain_text("done")
    # Times read as the installation's clock tells them (timezone, UTC here), to the minute.
    expect(cell(section, "Last import")).to_contain_text(
        re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")
    )
    expect(cell(section, "Records")).to_contain_text(SUMMARY)
    expect(cell(section, "Why").get_by_role("listitem")).to_have_text(
        ["skipped: deleted in Zendesk (1)", "refused: requester_id is not a Zendesk id (1)"]
    )
    expect(section.get_by_role("progressbar")).to_have_count(0)
    expect(section.get_by_role("button", name="Import history")).to_be_visible()
    expect(section.locator("#history-plan")).to_contain_text("reads 1,000 tickets a request")
    assert page.evaluate("window.notReloaded") is True, "the page was reloaded"
    assert tickets_imported(core) == seeded_ids(fake_zendesk)
    assert len(tickets_imported(core)) == seeded.tickets
    assert rows(core, writes) == 0


def test_a_refused_token_names_the_settings_to_check_and_imports_nothing(
    admin_page: Page,
    seeded: HistorySummary,
    gate: ExportGate,
    fake_zendesk: FakeZendesk,
    core: Installation,
) -> None:
    """Zendesk refusing the API token stops the import on its first page, with the settings
    to check, and the form is back."""
    fake_zendesk.api_token = "rotated-in-zendesk"
    gate.open()
    page = admin_page
    section = open_integration(page, "Zendesk")
    page.get_by_role("button", name="Import history").click()
    expect(cell(section, "Last import")).to_contain_text("stopped")
    expect(cell(section, "Last import")).to_contain_text("before reading a record")
    expect(cell(section, "Why it stopped")).to_have_text(
        "Zendesk answered 401: check integrations.zendesk.email and api_token "
        "(the export needs an admin's API token)"
    )
    expect(cell(section, "Records")).to_contain_text("0 imported")
    expect(section.get_by_role("button", name="Import history")).to_be_visible()
    assert tickets_imported(core) == []


def test_an_import_waiting_on_zendesk_is_stopped_then_continued_to_the_end(
    admin_page: Page,
    seeded: HistorySummary,
    gate: ExportGate,
    fake_zendesk: FakeZendesk,
    core: Installation,
) -> None:
    """With one export request a minute the import waits after its first page and says so;
    stopped, it says it can be continued; started again, it goes on from its cursor to the
    end, each ticket counted once, in the same import."""
    fake_zendesk.set_export_limit(1)
    gate.open()
    page = admin_page
    section = open_integration(page, "Zendesk")
    page.get_by_role("button", name="Import history").click()
    importing = cell(section, "Importing")
    expect(importing).to_contain_text(f"· {PAGE_SIZE} records")
    expect(importing).to_contain_text("waiting: Zendesk asked to wait")

    page.get_by_role("button", name="Stop the import").click()
    expect(page.get_by_role("status")).to_contain_text("Stopping after the current page")
    expect(cell(section, "Last import")).to_contain_text("stopped")
    expect(cell(section, "Why it stopped")).to_contain_text(
        "stopped before the end; run it again to continue"
    )
    expect(cell(section, "Records")).to_contain_text(f"{PAGE_SIZE} imported")
    assert len(tickets_imported(core)) == PAGE_SIZE

    fake_zendesk.set_export_limit(None)
    page.get_by_role("button", name="Import history").click()
    expect(page.get_by_role("status")).to_contain_text("Continuing the import of Zendesk history")
    expect(cell(section, "Last import")).to_contain_text("done")
    expect(cell(section, "Records")).to_contain_text(SUMMARY)
    expect(cell(section, "Why it stopped")).to_have_count(0)
    assert tickets_imported(core) == seeded_ids(fake_zendesk)
    assert rows(core, history_imports) == 1


def test_a_since_in_the_future_is_refused_and_nothing_starts(
    admin_page: Page, seeded: HistorySummary, core: Installation
) -> None:
    """A "since" the import cannot use is refused with what it expects and kept in the field
    to correct; no import begins."""
    section = open_integration(admin_page, "Zendesk")
    section.get_by_label("Since").fill("2999-01-01")
    section.get_by_role("button", name="Import history").click()
    expect(admin_page.get_by_role("status")).to_have_text(
        "Not started: since: '2999-01-01': is in the future"
    )
    expect(section.get_by_label("Since")).to_have_value("2999-01-01")
    assert rows(core, history_imports) == 0


def test_a_second_start_while_one_runs_is_refused(
    admin_page: Page, seeded: HistorySummary, gate: ExportGate, core: Installation
) -> None:
    """A start from a tab opened before the import began is refused with the reason, and
    that tab then follows the running import; no second import exists."""
    first = admin_page
    open_integration(first, "Zendesk")
    second = first.context.new_page()
    second.goto(first.url)
    first.get_by_role("button", name="Import history").click()
    expect(cell(first.locator("#history"), "Importing")).to_contain_text("0 records")

    second.get_by_role("button", name="Import history").click()
    refusal = second.get_by_role("status")
    expect(refusal).to_contain_text("Not started: an import of Zendesk history is running")
    expect(refusal).to_contain_text("wait for it to finish")
    expect(cell(second.locator("#history"), "Importing")).to_be_visible()
    assert rows(core, history_imports) == 1


def test_salesforce_says_how_many_cases_and_calls_it_costs_then_imports_them(
    admin_page: Page, fake_salesforce: FakeSalesforce, core: Installation
) -> None:
    """Salesforce's section counts the cases of the period and the API budget they cost
    before the import, then imports them all."""
    summary = seed_history(salesforce=fake_salesforce, requesters=15, cases=12, days=60, seed=3)
    page = admin_page
    section = open_integration(page, "Salesforce Service Cloud")
    expect(section.locator("#history-plan")).to_contain_text(
        f"{summary.cases} cases: about 1 API call of "
    )
    expect(section.locator("#history-plan")).to_contain_text("left today")
    page.get_by_role("button", name="Import history").click()
    expect(cell(section, "Last import")).to_contain_text("done")
    expect(cell(section, "Records")).to_have_text(
        f"{summary.cases} imported · 0 already imported · 0 skipped · 0 refused · 1 API call"
    )


def test_a_plan_the_page_cannot_fetch_is_said_so_instead_of_asked_for_ever(
    admin_page: Page,
) -> None:
    """When the plan's request fails, the plan line says it could not ask."""
    admin_page.route("**/history/plan", lambda route: route.fulfill(status=503, body="down"))
    section = open_integration(admin_page, "Zendesk")
    expect(section.locator("#history-plan")).to_contain_text(
        "could not ask; reload the page to try again"
    )


def test_a_salesforce_that_refuses_the_session_says_so_in_the_plan(
    admin_page: Page, fake_salesforce: FakeSalesforce
) -> None:
    """The plan asked of a Salesforce that refuses the session names what to check instead."""
    fake_salesforce.expire_sessions()
    section = open_integration(admin_page, "Salesforce Service Cloud")
    expect(section.locator("#history-plan .error")).to_contain_text(
        "Salesforce cannot tell what it holds: "
    )
    expect(section.get_by_role("button", name="Import history")).to_be_visible()


def test_twilio_says_what_it_reads_then_imports_the_calls_without_the_agents_legs(
    admin_page: Page, fake_twilio: FakeTwilio, core: Installation
) -> None:
    """Twilio's section says it reads the Calls list, then imports the customers' calls and
    counts each agent's leg as skipped."""
    summary = seed_history(twilio=fake_twilio, requesters=10, calls=8, days=60, seed=5)
    legs = sum(1 for call in fake_twilio.calls.values() if call.get("parent_call_sid"))
    page = admin_page
    section = open_integration(page, "Twilio")
    expect(section.locator("#history-plan")).to_contain_text(
        "reads the account's calls, 1,000 a request, newest first"
    )
    page.get_by_role("button", name="Import history").click()
    expect(cell(section, "Last import")).to_contain_text("done")
    expect(cell(section, "Records")).to_contain_text(
        f"{summary.calls - legs} imported · 0 already imported · {legs} skipped · 0 refused"
    )
    expect(cell(section, "Why")).to_have_text(f"skipped: an agent's leg of another call ({legs})")
