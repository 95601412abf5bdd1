"""Irreversible actions in a browser: each asks first, cancelling keeps things as they were."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from playwright.sync_api import Page, expect

from devkit.simulators.zendesk import FakeZendesk
from middleware.installation import Installation, build_installation
from middleware.process.worker import Worker
from tests.actions import ConfigFactory, Hooks
from tests.payloads import fixture_bytes

PBX = "Generic CTI (any PBX)"
BEN = 8447388090494  # the requester of ticket_created.json


@pytest.fixture
def core(
    database_url: str, fake_zendesk: FakeZendesk, make_config: ConfigFactory
) -> Iterator[Installation]:
    """An installation whose configuration file connects Zendesk only: the PBX is the UI's."""
    built = build_installation(make_config(database_url, fake_zendesk.url))
    yield built
    built.dispose()


@pytest.fixture
def ben(fake_zendesk: FakeZendesk, client: FlaskClient, worker: Worker, hooks: Hooks) -> None:
    """Ben Sample opened ticket 5158: a customer of his own, with a name."""
    fake_zendesk.add_user(BEN, "Ben Sample", email="ben.sample@example.com")
    assert hooks.zendesk(fixture_bytes("ticket_created.json")).status_code == 200
    worker.drain()


def new_pbx_secret(page: Page) -> str:
    """Generate the PBX's secret through its confirmation page; return the secret shown."""
    page.goto("/admin/integrations/cti")
    page.get_by_role("link", name="Generate a secret…").click()
    expect(page.get_by_role("heading", name=f"Generate a new {PBX} secret?")).to_be_visible()
    page.get_by_role("button", name="Generate a new secret").click()
    expect(page).to_have_url(re.compile(r"/admin/integrations/cti$"))
    return page.locator("#revealed-secret").inner_text()


def customer_number(page: Page) -> int:
    """Return the number of the customer whose page is open."""
    return int(page.url.rsplit("/", 1)[1])


def test_a_new_pbx_secret_is_asked_for_shown_once_and_a_reload_changes_nothing(
    admin_page: Page, core: Installation
) -> None:
    """The secret appears once after the redirect; reloading neither shows it nor makes another."""
    page = admin_page
    page.goto("/admin/integrations/cti")
    page.get_by_role("link", name="Generate a secret…").click()
    page.get_by_role("link", name="Cancel").click()  # cancelling makes none
    expect(page).to_have_url(re.compile(r"/admin/integrations/cti$"))
    assert core.registry.get("cti") is None

    secret = new_pbx_secret(page)
    assert secret.startswith("whsec_") and secret not in page.url
    expect(page.get_by_role("status").first).to_contain_text("shown this once")
    page.reload()
    expect(page.locator("#revealed-secret")).to_have_count(0)
    assert secret not in page.content()
    assert core.registry.get("cti").options["secret"] == secret  # the reload made no other


def test_disconnect_asks_first_and_cancelling_keeps_it(
    admin_page: Page, core: Installation
) -> None:
    """Disconnect leads to a question; Cancel keeps the PBX connected, confirming turns it off."""
    page = admin_page
    new_pbx_secret(page)
    page.get_by_role("link", name="Disconnect…").click()
    expect(page.get_by_role("heading", name=f"Disconnect {PBX}?")).to_be_visible()
    expect(page.get_by_role("listitem").first).to_contain_text("webhooks get 404")
    page.get_by_role("link", name="Cancel").click()
    expect(page.locator("#connection-state")).to_have_text("connected")
    assert core.registry.get("cti") is not None

    page.get_by_role("link", name="Disconnect…").click()
    page.get_by_role("button", name=f"Disconnect {PBX}").click()
    expect(page.get_by_role("status")).to_contain_text("is disconnected")
    expect(page.locator("#connection-state")).to_have_text("not connected")
    assert core.registry.get("cti") is None


@pytest.mark.usefixtures("ann", "ben")
def test_the_merge_page_shows_both_customers_by_name(admin_page: Page) -> None:
    """Merging Ben into Ann names both with their identities; Cancel merges nothing."""
    page = admin_page
    page.goto("/admin/customers/?q=ben.sample@example.com")
    page.get_by_role("row").nth(1).get_by_role("link").click()
    ben = customer_number(page)
    page.goto("/admin/customers/?q=ann.example@example.com")
    page.get_by_role("row").nth(1).get_by_role("link").click()
    ann = customer_number(page)

    page.get_by_label("Customer number").fill(str(ben))
    page.get_by_role("button", name=f"Merge into #{ann}…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Merge Ben Sample into Ann Example?")
    cards = page.locator(".customer-card")
    expect(cards.nth(0)).to_contain_text(f"Ben Sample #{ben}")
    expect(cards.nth(0)).to_contain_text("ben.sample@example.com")
    expect(cards.nth(1)).to_contain_text(f"Ann Example #{ann}")
    expect(cards.nth(1)).to_contain_text("ann.example@example.com")
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(re.compile(rf"/admin/customers/{ann}$"))
    page.goto(f"/admin/customers/{ben}")
    expect(page.locator("h1")).to_have_text(f"Ben Sample #{ben}")  # not merged

    page.goto(f"/admin/customers/{ann}")
    page.get_by_label("Customer number").fill(str(ben))
    page.get_by_role("button", name=f"Merge into #{ann}…").click()
    page.get_by_role("button", name=f"Merge into #{ann}").click()
    expect(page.get_by_role("status")).to_have_text(
        f"Customer {ben} (Ben Sample) is merged into this one."
    )
    page.reload()  # the result page is a GET: reloading repeats nothing
    expect(page.get_by_role("status")).to_have_count(0)
    expect(page.locator("h1")).to_have_text(f"Ann Example #{ann}")
