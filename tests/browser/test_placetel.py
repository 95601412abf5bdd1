"""Placetel connected from the browser alone: its setup steps, a generated path token."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from playwright.sync_api import Page, expect

from middleware.installation import Installation, build_installation
from tests.actions import ConfigFactory
from tests.values import PLUGINS_DIR, PUBLIC_URL


@pytest.fixture
def core(database_url: str, make_config: ConfigFactory) -> Iterator[Installation]:
    """An installation whose configuration file connects nothing: Placetel is the UI's."""
    built = build_installation(make_config(database_url, default_region="DE"))
    yield built
    built.dispose()


def test_placetel_is_connected_with_a_generated_token_that_its_url_then_accepts(
    admin_page: Page, core: Installation, client: FlaskClient
) -> None:
    """The page shows Placetel's setup steps; a generated token is shown once and works."""
    page = admin_page
    page.goto("/admin/integrations/placetel")
    expect(page.get_by_role("heading", name="Placetel", exact=False).first).to_be_visible()
    steps = page.locator("main").inner_text()
    assert "Settings → External APIs" in steps
    assert f"{PUBLIC_URL}/hooks/placetel/<token>" in steps
    page.get_by_role("link", name="Generate a secret…").click()
    expect(page.get_by_role("heading", name="Generate a new Placetel secret?")).to_be_visible()
    page.get_by_role("button", name="Generate a new secret").click()
    expect(page).to_have_url(re.compile(r"/admin/integrations/placetel$"))
    token = page.locator("#revealed-secret").inner_text()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert core.registry.get("placetel").options["token"] == token

    body = (PLUGINS_DIR / "placetel" / "fixtures" / "IncomingCall.form").read_bytes()
    form = "application/x-www-form-urlencoded"
    assert client.post(f"/hooks/placetel/{token}", data=body, content_type=form).status_code == 200
    wrong = client.post("/hooks/placetel/" + "x" * 43, data=body, content_type=form)
    assert wrong.status_code == 401
