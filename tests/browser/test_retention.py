"""An admin in a browser reads on the overview how long data is kept and what the last purge did."""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import Page, expect
from sqlalchemy import update

from middleware.customers.retention import purge
from middleware.installation import Installation
from middleware.store.tables import deliveries, utcnow


def test_the_overview_shows_the_retention_periods_and_the_last_purge(
    admin_page: Page, core: Installation, ann: None
) -> None:
    """Before a purge the overview says none ran; after one, when it ran and what it removed."""
    section = admin_page.locator("#retention")
    expect(admin_page.get_by_role("heading", name="Retention")).to_be_visible()
    expect(section).to_contain_text("Raw webhooks are kept 30 days after they are done")
    expect(section).to_contain_text("the timeline 730 days after an item last changed")
    expect(section).to_contain_text("No purge has run yet")
    month_ago = utcnow() - timedelta(days=31)
    with core.engine.begin() as conn:
        conn.execute(update(deliveries).values(next_attempt_at=month_ago, finished_at=month_ago))
    purge(core.engine, core.config.retention)

    admin_page.reload()
    expect(section).to_contain_text("Last purge: ")
    expect(section).to_contain_text(" UTC, removed 2 raw webhooks.")
