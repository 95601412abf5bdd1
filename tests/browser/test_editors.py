"""The mapping and template editors in a browser: line numbers and highlighting, an error
marked at its line, a page that fits a laptop's screen, and a form that works without scripts.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.actions import CodeEditor
from tests.browser.live_server import LiveServer
from tests.values import ADMIN_PASSWORD

MAPPING = "/admin/mappings/zendesk"
TEMPLATE = "/admin/templates/zendesk.txt.j2"
LAPTOP = {"width": 1280, "height": 800}
MAX_PAGE_PX = 1600
MAIL = "    mail: email\n"


def page_height(page: Page) -> int:
    """Return the height of the whole page, scrolled or not, in CSS pixels."""
    return int(page.evaluate("document.documentElement.scrollHeight"))


def cursor_line(page: Page) -> int:
    """Return the line (from 1) of the editor's cursor."""
    return int(page.evaluate("document.querySelector('.CodeMirror').CodeMirror.getCursor().line"))


@pytest.mark.usefixtures("ann")
@pytest.mark.parametrize(("path", "highlighted"), [(MAPPING, ".cm-atom"), (TEMPLATE, ".cm-tag")])
def test_an_editor_numbers_its_lines_highlights_and_fits_the_screen(
    admin_page: Page, path: str, highlighted: str
) -> None:
    """The editor shows line numbers and highlighting; the page, previews and all, is short."""
    page = admin_page
    page.set_viewport_size(LAPTOP)
    page.goto(path)
    editor = page.locator(".CodeMirror")
    expect(editor.locator(".CodeMirror-linenumber", has_text="1").first).to_be_visible()
    expect(editor.locator(highlighted).first).to_be_visible()  # a key, or a {% tag %}
    expect(page.locator("#document")).to_be_hidden()  # the form's field, under the editor
    expect(page.locator("#preview")).not_to_be_empty()
    assert editor.bounding_box()["height"] < LAPTOP["height"]
    assert page_height(page) < MAX_PAGE_PX


def test_a_yaml_error_is_reported_at_its_line_and_the_editor_shows_it(
    admin_page: Page, code_editor: CodeEditor
) -> None:
    """A misplaced colon far down is named by line and column, marked, and shown on a click;
    after a refused save the page opens at that line."""
    page = admin_page
    page.set_viewport_size(LAPTOP)
    page.goto(MAPPING)
    shipped = page.locator("#document").input_value()
    edited = shipped.rstrip("\n") + "\n  oops: a: b\n"  # a last line, below the editor's fold
    line = edited.count("\n")
    code_editor.fill(edited)
    error = page.locator("#preview .placed")
    expect(error).to_contain_text(f"not valid YAML at line {line}, column 10:")
    expect(error).to_contain_text("a “key: value” is not allowed here")
    marked = page.locator(".editor-error-gutter .CodeMirror-linenumber")
    expect(marked).to_have_text(str(line))
    page.locator(".CodeMirror-scroll").evaluate("element => { element.scrollTop = 0; }")
    expect(marked).not_to_be_in_viewport()
    error.get_by_role("button", name=f"Show line {line}").click()
    expect(marked).to_be_in_viewport()
    assert cursor_line(page) == line - 1

    page.locator(".CodeMirror-scroll").evaluate("element => { element.scrollTop = 0; }")
    page.get_by_role("button", name="Save as a new version").click()
    expect(page.locator("main > [role=alert]")).to_contain_text(
        f"Not saved: mapping: not valid YAML at line {line}, column 10"
    )
    expect(page.locator(".editor-error-gutter .CodeMirror-linenumber")).to_be_in_viewport()
    assert cursor_line(page) == line - 1
    assert page.locator("#document").input_value() == edited  # what was typed is kept

    code_editor.fill(shipped.replace(MAIL, "    mail: sms\n", 1))  # fixed: the mark goes
    expect(page.locator("#preview .placed")).to_have_count(0)
    expect(page.locator(".editor-error-line")).to_have_count(0)


@pytest.mark.usefixtures("ann")
def test_a_template_syntax_error_is_marked_at_its_line(
    admin_page: Page, code_editor: CodeEditor
) -> None:
    """A "}" that closes nothing on line 3 is named and marked at line 3."""
    page = admin_page
    page.goto(TEMPLATE)
    code_editor.fill("Hello.\n\n{{ customer.name }\n")
    expect(page.locator("#preview .placed")).to_contain_text("line 3: unexpected '}'")
    expect(page.locator(".editor-error-gutter .CodeMirror-linenumber")).to_have_text("3")
    code_editor.fill("Hello {{ customer.name }}.\n")
    expect(page.locator("#preview pre")).to_have_text("Hello Ann Example.")
    expect(page.locator(".editor-error-line")).to_have_count(0)


def test_without_scripts_the_form_saves_the_textarea(
    browser: Browser, live_server: LiveServer, ada
) -> None:
    """With scripts off the editor is the plain textarea, and saving it saves the text."""
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto("/admin/login")
        page.get_by_label("Username").fill(ada.username)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.goto(MAPPING)
        expect(page.locator(".CodeMirror")).to_have_count(0)
        field = page.get_by_label("Mapping YAML")
        field.fill(field.input_value().replace(MAIL, "    mail: sms\n", 1))
        page.get_by_role("button", name="Save as a new version").click()
        expect(page.get_by_role("status")).to_have_text("The Zendesk mapping is saved and in use.")
        expect(page.get_by_label("Mapping YAML")).to_have_value(
            field.input_value()  # the saved text, shown again
        )
        field.fill("events: [unclosed")
        page.get_by_role("button", name="Save as a new version").click()
        expect(page.locator("main > [role=alert]")).to_contain_text(
            "not valid YAML at line 1, column 9"
        )
    finally:
        context.close()
