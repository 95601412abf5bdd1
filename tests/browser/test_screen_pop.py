"""The screen-pop in a browser: opened from a shift link, updated live while the call goes on."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from playwright.sync_api import Page, expect

from middleware.installation import Installation
from middleware.process.worker import Worker
from middleware.reads.context_api import ANY_PHONE, signed_path
from tests.actions import Hooks
from tests.payloads import twilio_fields, zendesk_event

ANN_PHONE = "+14155550142"


def shift_link(core: Installation, phone: str) -> str:
    """Return the pop of a number as a softphone opens it: a shift link plus the caller's number."""
    link = signed_path(core.link_secret, "/pop", {"scope": ANY_PHONE}, 600)
    return f"{link}&phone={quote(phone)}"


@pytest.mark.usefixtures("ann")
def test_an_open_pop_shows_the_call_and_a_new_ticket_without_reloading(
    page: Page, core: Installation, client: FlaskClient, worker: Worker, hooks: Hooks
) -> None:
    """The pop of Ann's number gets her ringing call, its answer and her new ticket, live."""
    page.goto(shift_link(core, ANN_PHONE))
    pop = page.locator("#pop")
    expect(pop.locator("h1")).to_have_text("Ann Example")
    expect(pop).to_contain_text("#5141")
    expect(pop).not_to_contain_text("This call")
    expect(page.locator("#live")).to_have_text("live")  # the event stream is open
    page.evaluate("window.sameDocument = true")  # gone if the page were loaded again

    assert hooks.twilio(twilio_fields("call_started__ringing.form")).status_code == 200
    worker.drain()
    expect(pop.locator("#this-call")).to_contain_text("ringing")

    hooks.twilio(twilio_fields("call_leg_answered__emma.form"))
    worker.drain()
    expect(pop.locator("#this-call")).to_contain_text("Answered by emma")

    ticket = zendesk_event("ticket_created__mail.json", event_id=str(uuid.uuid4()), id="5158",
                           subject="Router blinks red since the call")  # fmt: skip
    assert hooks.zendesk(ticket).status_code == 200
    worker.drain()
    expect(pop).to_contain_text("#5158")
    expect(pop).to_contain_text("Router blinks red since the call")
    assert page.evaluate("window.sameDocument") is True
