"""Generic inbound in a browser: its mapping previews the fixtures, and a customer's page
says where the preferred channels came from."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from playwright.sync_api import Locator, Page, expect

from devkit.simulators.zendesk import FakeZendesk
from middleware.installation import Installation, build_installation
from middleware.process.worker import Worker
from tests.actions import ConfigFactory, Hooks
from tests.payloads import generic_body

EDITOR = "/admin/mappings/generic"


@pytest.fixture
def core(
    database_url: str, fake_zendesk: FakeZendesk, make_config: ConfigFactory
) -> Iterator[Installation]:
    """Build the browser tests' installation with the generic inbound integration too."""
    config = make_config(database_url, fake_zendesk.url, phone=True, generic=True)
    built = build_installation(config)
    yield built
    built.dispose()


def preview_cell(page: Page, fixture: str, field: str) -> Locator:
    """Return the preview cell of one field that a fixture maps to."""
    sample = page.locator("#preview .sample", has_text=f"fixture {fixture}")
    return sample.locator(f"tr:has(td:text-is('{field}')) td").nth(1)


def test_the_generic_mapping_previews_each_fixture(admin_page: Page) -> None:
    """The editor shows generic.yaml; the chat keeps only the customer's lines, the survey
    names the preferred channels, the ping is ignored."""
    page = admin_page
    page.goto(EDITOR)
    expect(page.locator("h1")).to_contain_text("generic.yaml")
    expect(preview_cell(page, "chatbot_conversation.json", "text")).to_contain_text(
        "I returned a blender in the store on Saturday"
    )
    expect(preview_cell(page, "chatbot_conversation.json", "text")).not_to_contain_text(
        "How can I help"
    )
    expect(preview_cell(page, "survey_answered.json", "kind")).to_have_text("survey")
    expect(preview_cell(page, "survey_answered.json", "preferred_channels")).to_have_text(
        "phone, email"
    )
    expect(preview_cell(page, "store_visit.json", "channel")).to_have_text("in_person")
    expect(preview_cell(page, "letter_scanned.json", "channel")).to_have_text("letter")
    expect(page.locator("#preview")).to_contain_text("test.ping")


def test_the_customer_page_says_the_preference_came_from_a_survey(
    admin_page: Page, client: FlaskClient, worker: Worker
) -> None:
    """After a survey answer the profile says "from a survey answer on …" linking its delivery."""
    Hooks(client).generic(generic_body("survey_answered.json"))
    worker.drain()
    page = admin_page
    page.goto("/admin/customers/?q=ann.example%40example.com")
    page.get_by_role("row").nth(1).get_by_role("link").click()
    origin = page.locator("#preference-origin")
    said = r"Preferred channels phone, email: from a survey answer on \d{4}-\d\d-\d\d \d\d:\d\d UTC"
    expect(origin).to_contain_text(re.compile(said))
    origin.get_by_role("link").click()
    expect(page.locator("body")).to_contain_text("preferred channels phone, email")
