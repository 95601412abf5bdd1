"""Security headers: a strict content policy on every page, and who may frame what."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest

from middleware.installation import build_installation
from middleware.reads.context_api import ANY_PHONE, signed_path
from middleware.web.app import create_app
from middleware.web.security_headers import PAGE_POLICY
from tests.payloads import fixture_bytes
from tests.values import AGENT_KEY
from webui.charts import line_chart, stacked_bars

ROOT = Path(__file__).resolve().parents[2]
BEARER = {"Authorization": f"Bearer {AGENT_KEY}"}
ANN_PHONE = "+14155550142"
NOT_FRAMED_PAGE = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
NOT_FRAMED_DATA = "default-src 'none'; frame-ancestors 'none'"
EMBEDDERS = ["https://flex.twilio.com", "https://*.lightning.force.com"]


def headers_of(response) -> dict[str, str | None]:
    """Return the security headers of a response (None where absent)."""
    names = ["Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options",
             "Referrer-Policy"]  # fmt: skip
    return {name: response.headers.get(name) for name in names}


def expected(policy: str, frame_options: str | None) -> dict[str, str | None]:
    """Return the security headers a response should carry."""
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": frame_options,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


@pytest.fixture
def framed_client(database_url, fake_zendesk, make_config):
    """Return a test client of an installation whose pop Flex and Salesforce may frame."""
    config = make_config(database_url, fake_zendesk.url, phone=True,
                         pop={"frame_ancestors": [*EMBEDDERS, "self"]})  # fmt: skip
    core = build_installation(config)
    yield create_app(core=core).test_client()
    core.dispose()


def test_admin_pages_forbid_framing_and_inline_code(client, admin_client):
    """Admin pages and the login page may be framed by no one and run no inline code."""
    assert headers_of(client.get("/admin/login")) == expected(NOT_FRAMED_PAGE, "DENY")
    for path in ("/admin/", "/admin/mappings/zendesk", "/admin/customers/"):
        response = admin_client.get(path)
        assert response.status_code == 200
        assert headers_of(response) == expected(NOT_FRAMED_PAGE, "DENY")


def test_the_pop_may_be_framed_by_carryover_itself_by_default(client):
    """By default the pop may be framed only by its own origin, in both header forms."""
    response = client.get(f"/pop?phone={quote(ANN_PHONE)}", headers=BEARER)
    assert response.status_code == 200
    assert headers_of(response) == expected(f"{PAGE_POLICY}; frame-ancestors 'self'", "SAMEORIGIN")


def test_the_pop_frame_ancestors_follow_the_configuration(framed_client):
    """The pop, its error page and its stream name the configured embedders; admin pages none."""
    policy = f"{PAGE_POLICY}; frame-ancestors {' '.join(EMBEDDERS)} 'self'"
    pop = framed_client.get(f"/pop?phone={quote(ANN_PHONE)}", headers=BEARER)
    assert pop.status_code == 200
    # X-Frame-Options cannot name other origins, and any value of it would refuse them.
    assert headers_of(pop) == expected(policy, None)
    error = framed_client.get("/pop?phone=not-a-number", headers=BEARER)
    assert error.status_code == 400
    assert headers_of(error) == expected(policy, None)

    link = signed_path(framed_client.application.extensions["carryover"].link_secret,
                       "/pop/events", {"scope": ANY_PHONE}, 60)  # fmt: skip
    stream = framed_client.get(f"{link}&phone={quote(ANN_PHONE)}", buffered=False)
    assert stream.mimetype == "text/event-stream"
    stream_headers = headers_of(stream)
    stream.close()
    assert stream_headers == expected(
        f"default-src 'none'; frame-ancestors {' '.join(EMBEDDERS)} 'self'", None
    )
    assert headers_of(framed_client.get("/admin/login")) == expected(NOT_FRAMED_PAGE, "DENY")


def test_webhook_replies_and_the_json_api_carry_the_policy_for_data(client, hooks):
    """A webhook's reply, the context API, health and a JSON error load nothing, framed by none."""
    replies = {
        "webhook": hooks.zendesk(fixture_bytes("ticket_created__mail.json")),
        "context": client.get(f"/api/v1/context?phone={quote(ANN_PHONE)}", headers=BEARER),
        "healthz": client.get("/healthz"),
        "refused": client.get(f"/api/v1/context?phone={quote(ANN_PHONE)}"),
    }
    assert {name: r.status_code for name, r in replies.items()} == {
        "webhook": 200, "context": 404, "healthz": 200, "refused": 401,
    }  # fmt: skip
    for response in replies.values():
        assert response.mimetype == "application/json"
        assert headers_of(response) == expected(NOT_FRAMED_DATA, "DENY")


# Markup the policy would block: a <style> element, a style attribute, an inline <script>,
# an event handler attribute, a javascript: URL.
INLINE_CODE = re.compile(
    r"<style|\sstyle\s*=|<script(?![^>]*\ssrc=)[^>]*>|\son[a-z]+\s*=|javascript:", re.IGNORECASE
)


@pytest.mark.parametrize(
    "template",
    sorted((ROOT / "webui" / "templates").rglob("*.html")),
    ids=lambda path: path.name,
)
def test_templates_hold_no_inline_script_or_style(template):
    """No page template holds what the content policy would block."""
    assert INLINE_CODE.findall(template.read_text(encoding="utf-8")) == []


def test_charts_draw_without_inline_style():
    """The overview's SVG charts use presentation attributes, which the policy allows."""
    charts = [
        line_chart(["09:00", "09:01"], {"zendesk": [1, 2], "twilio": [0, 1]}, "Traffic"),
        stacked_bars(["12-01", "12-02"], [(1, 2), (0, 3)], ("with", "without"), "Context"),
    ]
    assert [INLINE_CODE.findall(str(chart)) for chart in charts] == [[], []]
