"""A failing summary template in a browser: the overview names it; its page restores it."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.actions import CodeEditor
from tests.payloads import fixture_bytes
from tests.webui.test_admin_templates import FAILS_ON_REAL_WORDS

EDITOR = "/admin/templates/zendesk.txt.j2"


def test_a_failing_template_is_named_on_the_overview_and_restored(
    admin_page: Page, code_editor: CodeEditor, core, hooks, worker
) -> None:
    """The overview links to the failing template; Restore puts the shipped text in use."""
    page = admin_page
    page.goto(EDITOR)  # no customer yet: the samples render this text, so it is saved
    code_editor.fill(FAILS_ON_REAL_WORDS)
    page.get_by_role("button", name="Save as a new version").click()
    expect(page.locator("h1")).to_contain_text("version 1")
    for name in ("ticket_created__mail.json", "ticket_created__facebook_message.json"):
        assert hooks.zendesk(fixture_bytes(name)).status_code == 200
    worker.drain()

    page.goto("/admin/")
    warning = page.get_by_role("alert").filter(has_text="zendesk.txt.j2")
    expect(warning).to_contain_text("(version 1) failed")
    warning.get_by_role("link", name="zendesk.txt.j2").click()
    expect(page.locator("#template-failure")).to_contain_text("nmae")

    page.get_by_role("button", name="Restore the shipped template").click()
    expect(page.get_by_role("status")).to_have_text("The shipped zendesk.txt.j2 is in use again.")
    expect(page.locator("h1")).to_contain_text("version 2")
    expect(page.locator("#template-failure")).to_have_count(0)
    expect(page.locator("#document")).to_have_value(re.compile(r"summary\.txt\.j2"))
    expect(
        page.get_by_role("row", name=re.compile("restored the shipped template"))
    ).to_contain_text("(in use)")
    page.goto("/admin/")
    expect(page.get_by_role("alert").filter(has_text="zendesk.txt.j2")).to_have_count(0)
