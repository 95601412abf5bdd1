"""The customer profile in a browser: split an identity off, merge it back, erase."""

from __future__ import annotations

import re
from urllib.parse import quote_plus

import pytest
from playwright.sync_api import Locator, Page, expect

ANN_EMAIL = "ann.example@example.com"
ANN_PHONE = "+14155550142"


def search(page: Page, query: str) -> None:
    """Search customers with the page's search form."""
    page.get_by_label("Search customers").fill(query)
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(re.escape(f"?q={quote_plus(query)}") + "$"))


def open_profile(page: Page, query: str) -> int:
    """Search customers, open the one match and return its number."""
    page.goto("/admin/customers/")
    search(page, query)
    expect(page.get_by_role("row")).to_have_count(2)  # the header and the one match
    page.get_by_role("row").nth(1).get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/admin/customers/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def identity_row(page: Page, value: str) -> Locator:
    """Return the row of the profile's identities table that holds a value."""
    return page.get_by_role("row").filter(has=page.locator("code", has_text=value))


@pytest.mark.usefixtures("ann")
def test_an_identity_split_off_becomes_a_customer_and_merging_brings_it_back(
    admin_page: Page,
) -> None:
    """Split Ann's phone off: a second customer holds it; merging it into Ann undoes that."""
    page = admin_page
    ann = open_profile(page, ANN_EMAIL)
    expect(page.locator("h1")).to_have_text(f"Ann Example #{ann}")
    expect(identity_row(page, ANN_PHONE)).to_have_count(1)

    identity_row(page, ANN_PHONE).get_by_role("link", name="Split off…").click()
    expect(page.get_by_role("heading", name=f"Split {ANN_PHONE} off Ann Example?")).to_be_visible()
    page.get_by_role("button", name="Split it off").click()
    expect(page.get_by_role("status")).to_contain_text("the two stay apart")
    expect(identity_row(page, ANN_PHONE)).to_have_count(0)
    expect(identity_row(page, ANN_EMAIL)).to_have_count(1)
    page.get_by_role("link", name=re.compile(r"^customer \d+$")).click()  # kept apart from …
    expect(page.locator("h1")).to_contain_text("Unnamed customer")
    caller = int(page.url.rsplit("/", 1)[1])
    assert caller != ann
    expect(identity_row(page, ANN_PHONE)).to_have_count(1)
    assert open_profile(page, "(415) 555-0142") == caller  # the phone now finds the other one

    page.goto(f"/admin/customers/{ann}")
    page.get_by_label("Customer number").fill(str(caller))
    page.get_by_role("button", name=f"Merge into #{ann}…").click()
    page.get_by_role("button", name=f"Merge into #{ann}").click()
    expect(page.get_by_role("status")).to_have_text(f"Customer {caller} is merged into this one.")
    expect(identity_row(page, ANN_PHONE)).to_have_count(1)
    expect(page.get_by_role("listitem").filter(has_text="merged by an admin")).to_contain_text(
        f"customer {caller} merged into {ann}"
    )
    assert open_profile(page, "(415) 555-0142") == ann
    page.goto(f"/admin/customers/{caller}")  # the old number leads to Ann
    expect(page.get_by_role("status")).to_have_text(
        f"Customer {caller} was merged into customer {ann}."
    )
    expect(page.locator("h1")).to_have_text(f"Ann Example #{ann}")


@pytest.mark.usefixtures("ann")
def test_erasing_needs_the_typed_number_and_then_search_finds_nobody(admin_page: Page) -> None:
    """A wrong confirmation is refused; the right one erases Ann, whom search no longer finds."""
    page = admin_page
    ann = open_profile(page, ANN_EMAIL)
    page.get_by_role("link", name=f"Erase customer #{ann}…").click()
    expect(page.get_by_role("heading", name="Erase Ann Example?")).to_be_visible()
    erase = page.get_by_role("button", name=f"Erase customer #{ann}")
    page.get_by_label("to confirm").fill(str(ann + 1))
    erase.click()
    expect(page.locator("p.error")).to_have_text(
        f"Type the customer's number ({ann}) to confirm the erasure."
    )
    assert open_profile(page, ANN_EMAIL) == ann  # still there

    page.get_by_role("link", name=f"Erase customer #{ann}…").click()
    page.get_by_label("to confirm").fill(str(ann))
    erase.click()
    expect(page.get_by_role("status")).to_contain_text(f"Customer {ann} is erased:")
    expect(page.get_by_role("heading", name="Customers")).to_be_visible()
    for query in (ANN_EMAIL, "(415) 555-0142", "Ann Example"):
        search(page, query)
        expect(page.get_by_text("No customer matches.")).to_be_visible()
    page.goto(f"/admin/customers/{ann}")
    expect(page.get_by_role("heading", name="404 Not Found")).to_be_visible()
