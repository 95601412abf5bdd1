"""An admin in a browser sees on the overview which workers run, and which went silent."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

from playwright.sync_api import Page, expect
from sqlalchemy import update

from middleware.installation import Installation
from middleware.process.liveness import beat
from middleware.store.tables import utcnow, workers


def test_the_overview_lists_the_workers_alive_and_silent(
    admin_page: Page, core: Installation
) -> None:
    """With none the overview warns; then each worker shows its pid, kind and state."""
    table = admin_page.locator("#workers")
    expect(admin_page.get_by_role("heading", name="Workers")).to_be_visible()
    expect(table).to_contain_text("No worker has run in the last day")
    beat(core, "alive-one", threading.Event())
    beat(core, "silent-one", threading.Event())
    past = utcnow() - timedelta(minutes=5)
    with core.engine.begin() as conn:
        conn.execute(update(workers).where(workers.c.name == "silent-one").values(
            pid=1, seen_at=past, alive_until=past + timedelta(seconds=90)))  # fmt: skip

    admin_page.reload()
    rows = table.locator("tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(1).locator("td").nth(1)).to_have_text("1")
    expect(rows.nth(1).locator("td").last).to_have_text("silent")
    expect(rows.nth(2).locator("td").nth(1)).to_have_text(str(os.getpid()))
    expect(rows.nth(2)).to_contain_text("in a web process")
    expect(rows.nth(2).locator("td").last).to_have_text("alive")
    explained = admin_page.locator("#workers + p")
    expect(explained).to_contain_text("beats every 10 s; it is silent after 90 s without a beat")
