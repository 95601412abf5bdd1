"""An admin in a browser during an upstream fault: the pause, the backlog, the latest error."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from playwright.sync_api import Page, expect
from sqlalchemy import insert

from devkit.simulators.zendesk import FakeZendesk
from middleware.installation import Installation
from middleware.process.worker import Worker
from middleware.store.tables import deliveries, utcnow
from tests.actions import Hooks
from tests.payloads import fixture_bytes, zendesk_event


@pytest.fixture
def zendesk_paused_with_a_backlog(
    client: FlaskClient, worker: Worker, fake_zendesk: FakeZendesk, core: Installation, hooks: Hooks
) -> None:
    """A webhook refused by Zendesk, a note held by a 429 pause, 76 webhooks waiting 32 s."""
    fake_zendesk.fail_next(403, body={"error": "Forbidden"})
    hooks.zendesk(zendesk_event("ticket_created__mail.json", event_id="refused-1"))
    worker.drain()
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    for row in core.inbox.claim(worker.owner, 30, 10):
        worker._process(row)
    fake_zendesk.fail_next(429, headers={"Retry-After": "37"}, body={"error": "TooManyRequests"})
    worker.drain()
    received = utcnow() - timedelta(seconds=32)
    with core.engine.begin() as conn:
        conn.execute(insert(deliveries), [
            {"plugin": "zendesk", "received_at": received, "headers": "{}", "body": b"{}",
             "event_keys": "[]", "status": "pending", "attempts": 0, "trail": "[]",
             "next_attempt_at": utcnow() + timedelta(minutes=1)} for _ in range(76)
        ])  # fmt: skip


def test_the_overview_and_the_integration_say_zendesk_is_paused(
    admin_page: Page, zendesk_paused_with_a_backlog: None
) -> None:
    """The overview leads with the pause and the backlog; the integration page repeats it."""
    page = admin_page
    page.reload()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Zendesk is paused for another")
    expect(alert).to_contain_text("after “Zendesk answered 429”")
    expect(alert).to_contain_text("76 webhooks wait for Zendesk")
    figures = page.locator(".figures")
    expect(figures).to_contain_text("median lag of webhooks, finished and still waiting")
    expect(figures.locator("div", has_text="webhooks waiting")).to_contain_text("76")
    expect(figures).to_contain_text("webhooks waiting, oldest 3")
    row = page.locator("table.upstreams tr", has_text="Zendesk")
    expect(row).to_contain_text("paused for another")
    expect(row).to_contain_text("1 note until Zendesk resumes")
    expect(row).to_contain_text("1 webhook")

    page.get_by_role("link", name="Zendesk").first.click()
    expect(page.get_by_role("heading", name="Zendesk")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Zendesk is paused for another")
    expect(page.locator("tr", has_text="Zendesk API")).to_contain_text("resumes at")
    expect(page.locator("tr", has_text="Latest error")).to_contain_text("Zendesk answered 429")
