"""The mapping editor in a browser: the live preview, inline errors, versions and rollback."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

from tests.actions import CodeEditor

EDITOR = "/admin/mappings/zendesk"
MAIL = "    mail: email\n"


def mail_channel(page: Page) -> Locator:
    """Return the preview cell of the channel that the mail fixture's ticket maps to."""
    sample = page.locator("#preview .sample", has_text="fixture ticket_created__mail.json")
    return sample.locator("tr:has(td:text-is('channel')) td").nth(1)


def edit_mail_as(editor: CodeEditor, channel: str, shipped: str) -> None:
    """Type a document into the editor that maps Zendesk's `mail` channel to another one."""
    editor.fill(shipped.replace(MAIL, f"    mail: {channel}\n", 1))


def test_the_preview_follows_typing_errors_name_the_path_and_versions_roll_back(
    admin_page: Page, code_editor: CodeEditor
) -> None:
    """Edits re-map the fixtures as typed; a bad channel is named; a rollback restores v1."""
    page = admin_page
    page.goto(EDITOR)
    expect(page.get_by_role("heading", name=re.compile("Zendesk mapping"))).to_contain_text(
        "zendesk.yaml"
    )
    shipped = page.locator("#document").input_value()
    assert MAIL in shipped
    expect(mail_channel(page)).to_have_text("email")

    edit_mail_as(code_editor, "sms", shipped)  # the page's script previews as you type
    expect(mail_channel(page)).to_have_text("sms")
    expect(page.locator("#preview")).to_contain_text("Charged twice for my January invoice")

    edit_mail_as(code_editor, "carrier-pigeon", shipped)
    error = page.locator("#preview [role=alert]")
    expect(error).to_contain_text("channel.table (channels.mail)")
    expect(error).to_contain_text("carrier-pigeon")
    code_editor.fill("events: [unclosed")
    expect(error).to_contain_text("not valid YAML")

    # Save once the preview shows the edit: the admin saves what they saw, and no preview
    # request is still running (its answer rewrites the session cookie, which can bring back
    # a flash message already shown).
    edit_mail_as(code_editor, "sms", shipped)
    expect(mail_channel(page)).to_have_text("sms")
    page.get_by_label("Note").fill("mail is our SMS bridge")
    page.get_by_role("button", name="Save as a new version").click()
    expect(page.get_by_role("status")).to_have_text("The Zendesk mapping is saved and in use.")
    expect(page.locator("h1")).to_contain_text("version 1")
    expect(page.get_by_role("row", name=re.compile("mail is our SMS bridge"))).to_contain_text(
        "(in use)"
    )
    expect(mail_channel(page)).to_have_text("sms")  # the saved version, rendered by the server

    edit_mail_as(code_editor, "chat", shipped)
    expect(mail_channel(page)).to_have_text("chat")
    page.get_by_role("button", name="Save as a new version").click()
    expect(page.locator("h1")).to_contain_text("version 2")
    expect(mail_channel(page)).to_have_text("chat")

    version_1 = page.get_by_role("row", name=re.compile("mail is our SMS bridge"))
    version_1.get_by_role("button", name="Roll back to this").click()
    expect(page.get_by_role("status")).to_have_text("Version 1 is in use again.")
    expect(page.locator("h1")).to_contain_text("version 3")
    expect(page.get_by_role("row", name=re.compile("rollback to version 1"))).to_contain_text(
        "(in use)"
    )
    expect(page.locator("#document")).to_have_value(re.compile(r"\n    mail: sms\n"))
    expect(mail_channel(page)).to_have_text("sms")
