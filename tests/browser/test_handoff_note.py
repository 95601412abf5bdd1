"""A handoff note typed in one agent's screen-pop appears in the next agent's pop, live."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from middleware.installation import Installation
from middleware.process.worker import Worker
from tests.actions import Hooks
from tests.browser.test_screen_pop import ANN_PHONE, shift_link
from tests.payloads import twilio_fields

NOTE = "Charged twice for INV-1042; refund approved up to $50, needs manager sign-off."
# Set to a folder to keep screenshots of both pops (to look at how the note reads).
SCREENSHOTS = os.environ.get("CARRYOVER_SCREENSHOTS")


def shot(page: Page, name: str) -> None:
    """Keep a screenshot of the page when CARRYOVER_SCREENSHOTS names a folder."""
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


@pytest.fixture
def answered(ann: None, hooks: Hooks, worker: Worker) -> None:
    """Ann's call rings and emma answers it."""
    for name in ("call_started__ringing.form", "call_leg_answered__emma.form"):
        assert hooks.twilio(twilio_fields(name)).status_code == 200
    worker.drain()


@pytest.mark.usefixtures("answered")
def test_a_note_typed_in_one_pop_shows_in_the_next_agents_pop_without_reloading(
    page: Page,
    browser_context: BrowserContext,
    core: Installation,
    hooks: Hooks,
    worker: Worker,
) -> None:
    """emma saves a note; bob's open pop shows it at once, keeps his typing, and the form
    goes away in both pops when the call ends."""
    emma, bob = page, browser_context.new_page()
    bob.set_viewport_size({"width": 420, "height": 720})  # a softphone's side panel
    for pop in (emma, bob):
        pop.goto(shift_link(core, ANN_PHONE))
        expect(pop.locator("#live")).to_have_text("live")
        expect(pop.locator("#this-call")).to_contain_text("Answered by emma")
        expect(pop.get_by_label("Handoff note for the next agent")).to_be_visible()
    bob.evaluate("window.sameDocument = true")  # gone if the page were loaded again

    emma.get_by_label("Handoff note for the next agent").fill(NOTE)
    emma.get_by_role("button", name="Save note").click()
    expect(emma.locator("#handoff-status")).to_have_text("Saved: the next agent sees it")
    expect(emma.get_by_label("Handoff note for the next agent")).to_have_value("")
    expect(emma.locator("#this-call")).to_contain_text("Handoff note from emma")

    note = bob.locator("#this-call .handoff")
    expect(note).to_contain_text("Handoff note from emma")
    expect(note).to_contain_text(NOTE)
    assert bob.evaluate("window.sameDocument") is True

    # bob types while the call is transferred to him: the body is swapped, his text stays.
    bob.get_by_label("Handoff note for the next agent").fill("Manager approved the refund")
    hooks.twilio(twilio_fields("call_leg_answered__transfer_to_bob.form"))
    worker.drain()
    expect(bob.locator("#this-call")).to_contain_text("Transferred from emma to bob")
    expect(note).to_contain_text(NOTE)
    expect(bob.get_by_label("Handoff note for the next agent")).to_have_value(
        "Manager approved the refund"
    )
    shot(emma, "handoff-emma")
    shot(bob, "handoff-bob")
    if SCREENSHOTS:  # what the panel shows without scrolling
        bob.screenshot(path=str(Path(SCREENSHOTS) / "handoff-bob-panel.png"))

    hooks.twilio(twilio_fields("call_ended__completed.form"))
    worker.drain()
    for pop in (emma, bob):
        expect(pop.locator("#this-call")).to_contain_text("completed")
        expect(pop.get_by_label("Handoff note for the next agent")).to_be_hidden()
    expect(note).to_contain_text(NOTE)  # the ended call still tells its story
    shot(bob, "handoff-bob-ended")


@pytest.mark.usefixtures("answered")
def test_a_refused_note_shows_the_servers_reason_and_keeps_the_text(
    page: Page, core: Installation
) -> None:
    """A note the server refuses (here made too long on its way) leaves the text as typed and
    says why."""
    page.goto(shift_link(core, ANN_PHONE))
    expect(page.locator("#live")).to_have_text("live")
    box = page.get_by_label("Handoff note for the next agent")
    assert box.get_attribute("maxlength") == "500"
    too_long = json.dumps({"text": "x" * 501})
    page.route("**/pop/handoff?*", lambda route: route.continue_(post_data=too_long))
    box.fill("Call back about the refund")
    page.get_by_role("button", name="Save note").click()
    expect(page.locator("#handoff-status")).to_have_text(
        "A handoff note holds at most 500 characters (this one has 501)"
    )
    expect(box).to_have_value("Call back about the refund")
    expect(page.locator("#this-call")).not_to_contain_text("Handoff note")
    shot(page, "handoff-refused")
