"""The content policy in a browser: pages work with no violation, frames only where allowed.

Every test here also fails if a page breaks its policy unasked (see policy_violations in
conftest.py). The pages of other origins that frame the pop are made up by the browser
itself: nothing leaves 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from html import escape
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, Route, expect

from devkit.simulators.zendesk import FakeZendesk
from middleware.installation import Installation, build_installation
from middleware.reads.context_api import ANY_PHONE, signed_path
from tests.actions import CodeEditor, ConfigFactory

ANN_PHONE = "+14155550142"
SOFTPHONE = "https://softphone.example.com"  # listed in pop.frame_ancestors below
ELSEWHERE = "https://elsewhere.example.com"  # not listed


@pytest.fixture
def core(
    database_url: str, fake_zendesk: FakeZendesk, make_config: ConfigFactory
) -> Iterator[Installation]:
    """Build the browser tests' installation, whose pop the softphone's page may frame."""
    config = make_config(database_url, fake_zendesk.url, phone=True,
                         pop={"poll_s": 0.2, "frame_ancestors": ["self", SOFTPHONE]})  # fmt: skip
    built = build_installation(config)
    yield built
    built.dispose()


def pop_link(core: Installation, base: str = "") -> str:
    """Return Ann's pop as a softphone opens it: a shift link plus the caller's number."""
    link = signed_path(core.link_secret, "/pop", {"scope": ANY_PHONE}, 600)
    return f"{base}{link}&phone={quote(ANN_PHONE)}"


def serve_framing_page(page: Page, origin: str, frames: dict[str, str]) -> None:
    """Answer the browser's requests to origin with a page that frames the given URLs."""
    body = "".join(f'<iframe name="{name}" src="{escape(url)}" width="600" height="300"></iframe>'
                   for name, url in frames.items())  # fmt: skip

    def fulfil(route: Route) -> None:
        route.fulfill(content_type="text/html", body=f"<!doctype html><title>Tool</title>{body}")

    page.route(f"{origin}/**", fulfil)  # a page's routes come before the context's refusal
    # Chromium asks the user before a page of the internet frames a loopback address (Local
    # Network Access); here Carryover's 127.0.0.1 stands in for a public address. Only a
    # secure origin can be granted that, hence https:// for the made-up pages.
    page.context.grant_permissions(["local-network-access"], origin=origin)


@pytest.mark.usefixtures("ann")
def test_the_pop_goes_live_with_its_styles_and_no_policy_violation(
    page: Page, core: Installation, policy_violations: list[str]
) -> None:
    """The pop, under its policy, is styled, connects its event stream and breaks no rule."""
    page.goto(pop_link(core))
    expect(page.locator("#pop h1")).to_have_text("Ann Example")
    expect(page.locator("#live")).to_have_text("live")  # pop.js ran; its EventSource is open
    header = page.locator("header")
    expect(header).to_have_css("background-color", "rgb(35, 57, 91)")  # pop.css applied
    assert policy_violations == []


@pytest.mark.usefixtures("ann")
def test_the_mapping_and_template_editors_preview_with_no_policy_violation(
    admin_page: Page, code_editor: CodeEditor, policy_violations: list[str]
) -> None:
    """Both editors' script previews what is typed (fetch allowed), breaking no rule."""
    page = admin_page
    page.goto("/admin/mappings/zendesk")
    code_editor.fill("events: [unclosed")
    expect(page.locator("#preview [role=alert]")).to_contain_text("not valid YAML")

    page.goto("/admin/templates/zendesk.txt.j2?customer=1")
    code_editor.fill("Context for {{ customer.name }}")
    expect(page.locator("#preview pre")).to_have_text("Context for Ann Example")
    expect(page.locator("header.top")).to_have_css("display", "flex")  # admin.css applied
    assert policy_violations == []


@pytest.mark.usefixtures("ann")
def test_a_listed_softphone_frames_the_pop_but_never_an_admin_page(
    page: Page, core: Installation, live_server, policy_violations: list[str]
) -> None:
    """The softphone's page shows the live pop in a frame; an admin page in a frame is refused."""
    frames = {"pop": pop_link(core, live_server.url), "admin": f"{live_server.url}/admin/login"}
    serve_framing_page(page, SOFTPHONE, frames)
    with page.expect_console_message(lambda m: "frame-ancestors 'none'" in m.text):
        page.goto(f"{SOFTPHONE}/agent")
    pop = page.frame_locator("iframe[name=pop]")
    expect(pop.locator("#pop h1")).to_have_text("Ann Example")
    expect(pop.locator("#live")).to_have_text("live")
    expect(page.frame_locator("iframe[name=admin]").locator("form")).to_have_count(0)
    [refusal] = policy_violations  # the admin frame's, naming Carryover's origin
    assert live_server.url in refusal and "frame-ancestors 'none'" in refusal
    policy_violations.clear()  # the refusal this test expects


def test_a_page_not_listed_cannot_frame_the_pop(
    page: Page, core: Installation, live_server, policy_violations: list[str]
) -> None:
    """A page of an origin that pop.frame_ancestors does not list gets no pop in its frame."""
    serve_framing_page(page, ELSEWHERE, {"pop": pop_link(core, live_server.url)})
    with page.expect_console_message(lambda m: "frame-ancestors 'self'" in m.text) as refusal:
        page.goto(f"{ELSEWHERE}/agent")
    assert f"\"frame-ancestors 'self' {SOFTPHONE}\"" in refusal.value.text
    expect(page.frame_locator("iframe[name=pop]").locator("#pop")).to_have_count(0)
    policy_violations.clear()  # the refusal this test expects
