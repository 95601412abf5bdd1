"""What the fixtures of conftest.py hand out: senders that post webhooks, an admin at the form.

Tests get these from the fixtures (``hooks``, ``hooks_for``, ``admin``, ``admin_for``,
``make_config``, the browser tests' ``code_editor``) and import names from here only to
annotate them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from middleware.config import Config
from plugins.twilio import sign as twilio_sign
from tests.payloads import cti_headers, generic_headers, shopify_headers, zendesk_headers
from tests.values import ADMIN_PASSWORD, PUBLIC_URL, SOAP_HEADERS, TWILIO_TOKEN

if TYPE_CHECKING:
    from playwright.sync_api import Page

ConfigFactory = Callable[..., Config]
# written_before(target, target_ref, marker)
NoteRecorder = Callable[[str, str, str], None]


class Hooks:
    """Post deliveries to /hooks/<key> through one client, signed as each sender signs."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def zendesk(self, body: bytes, **kwargs: Any) -> TestResponse:
        """POST a signed delivery to /hooks/zendesk."""
        return self.client.post(
            "/hooks/zendesk", data=body, headers=zendesk_headers(body, **kwargs)
        )

    def twilio(
        self, fields: list[tuple[str, str]], token: str = TWILIO_TOKEN, **kw: Any
    ) -> TestResponse:
        """POST form parameters to /hooks/twilio, signed over public_url + path as Twilio signs."""
        signature = twilio_sign(token, PUBLIC_URL + "/hooks/twilio", fields)
        headers = {"X-Twilio-Signature": signature, **kw.pop("headers", {})}
        return self.client.post(
            "/hooks/twilio", data=urlencode(fields), headers=headers,
            content_type="application/x-www-form-urlencoded",
        )  # fmt: skip

    def cti(self, body: bytes, **kwargs: Any) -> TestResponse:
        """POST a signed generic-CTI event to /hooks/cti."""
        return self.client.post("/hooks/cti", data=body, headers=cti_headers(body, **kwargs))

    def shopify(self, body: bytes, topic: str, **kwargs: Any) -> TestResponse:
        """POST a signed Shopify webhook of a topic to /hooks/shopify."""
        return self.client.post(
            "/hooks/shopify", data=body, headers=shopify_headers(body, topic, **kwargs)
        )

    def generic(self, body: bytes, **kwargs: Any) -> TestResponse:
        """POST a Standard Webhooks event to /hooks/generic, signed with GENERIC_SECRET."""
        return self.client.post(
            "/hooks/generic", data=body, headers=generic_headers(body, **kwargs)
        )

    def salesforce(self, body: bytes) -> TestResponse:
        """POST an Outbound Message to /hooks/salesforce as Salesforce does."""
        return self.client.post("/hooks/salesforce", data=body, headers=SOAP_HEADERS)


class AdminActions:
    """Act as an admin in a browser would, through one client: log in, read CSRF tokens."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    @staticmethod
    def csrf(page: bytes) -> str:
        """Return the CSRF token a page's form carries."""
        match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
        assert match, "the page has no CSRF token"
        return match.group(1).decode()

    def log_in(
        self, username: str = "ada", password: str = ADMIN_PASSWORD, **extra: str
    ) -> TestResponse:
        """Log in through the admin login form."""
        token = self.csrf(self.client.get("/admin/login").data)
        form = {"username": username, "password": password, "csrf_token": token, **extra}
        return self.client.post("/admin/login", data=form)


class CodeEditor:
    """The mapping or template editor of a page in a browser (CodeMirror over the textarea)."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def fill(self, text: str) -> None:
        """Replace the editor's text as an admin does: select all of it, then type."""
        self.page.locator(".CodeMirror").click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.insert_text(text)
