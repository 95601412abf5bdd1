"""Replaying a dead webhook from the deliveries pages of a browser."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from playwright.sync_api import Page, expect

from devkit.simulators.zendesk import FakeZendesk
from middleware.process.worker import Worker
from tests.actions import Hooks
from tests.payloads import fixture_bytes


def test_a_webhook_dead_after_an_upstream_refusal_is_replayed_and_then_done(
    admin_page: Page, client: FlaskClient, worker: Worker, fake_zendesk: FakeZendesk, hooks: Hooks
) -> None:
    """Zendesk refuses the requester lookup: dead; Replay queues it; the next pass is done."""
    assert hooks.zendesk(fixture_bytes("ticket_created__mail.json")).status_code == 200
    fake_zendesk.fail_next(403, body={"error": "Forbidden"})
    worker.drain()

    page = admin_page
    page.goto("/admin/deliveries/")
    page.get_by_label("Status").select_option("dead")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"status=dead"))
    expect(page.get_by_text("1 dead webhook and 0 dead notes.")).to_be_visible()
    row = page.get_by_role("row", name=re.compile(r"^in:1 "))
    expect(row).to_contain_text("dead")
    expect(row).to_contain_text("Zendesk answered 403")

    row.get_by_role("link", name="in:1").click()
    status = page.get_by_role("row", name=re.compile(r"^Status "))
    expect(status).to_contain_text("dead, 1 failed try")  # Zendesk refused it: no retry
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status")).to_have_text("Delivery 1 is queued again.")
    expect(status).to_have_text(re.compile(r"pending, not tried yet$"))

    worker.drain()  # the embedded worker's next pass; Zendesk answers this time
    page.reload()
    expect(status.get_by_role("cell")).to_have_text(
        re.compile(r"^done, \d{4}-\d\d-\d\d ")
    )  # first try: no count
    expect(page.get_by_role("row", name=re.compile(r"processed"))).not_to_have_count(0)
    page.goto("/admin/deliveries/?status=dead")
    expect(page.get_by_text("No webhooks match.")).to_be_visible()
    expect(page.get_by_role("button", name="Replay every dead letter")).to_have_count(0)
