"""The one Twilio API call Carryover makes: the account's Calls list, for an import."""

from __future__ import annotations

import re
from datetime import date
from functools import partial
from typing import Any
from urllib.parse import urlencode

import requests

from middleware.errors import PermanentUpstreamError, RateLimited, UpstreamError
from middleware.integrations.network import UpstreamGuard
from middleware.integrations.upstreams import send_observed

CALLS_PAGE = 1000  # calls a page: Twilio's largest PageSize
RETRY_AFTER_S = 5.0  # Twilio's 429 (error 20429) names no wait
MAX_PAGE_URI = 2000
REFUSED = "check integrations.twilio.account_sid and auth_token"
NOT_CALLS = "Twilio named a next page that is not this account's calls"


class TwilioClient:
    """Read the Calls list of one account, a page at a time, with HTTP basic auth."""

    def __init__(
        self, api_url: str, account_sid: str, auth_token: str, timeout: float,
        guard: UpstreamGuard | None = None,
    ) -> None:  # fmt: skip
        self.api_url = api_url.rstrip("/")
        self.account_sid = account_sid
        self.session = requests.Session()
        self.session.auth = (account_sid, auth_token)
        self.timeout = timeout
        self.guard = guard or UpstreamGuard(allow_private=True)
        self.sent = 0  # requests sent, for the API calls an import reports
        # Only the Calls list of this account is ever asked for: a next page Twilio names
        # must stay on it (it goes into the URL of the next request).
        self.calls_path = f"/2010-04-01/Accounts/{account_sid}/Calls.json"
        self._next_page = re.compile(re.escape(self.calls_path) + r"\?[A-Za-z0-9%&=._~+-]{1,1900}")

    def calls_page(self, since: date | None, page_uri: str | None) -> dict[str, Any]:
        """Return the first page of calls that started on or after `since`, or a next page."""
        if page_uri is not None:
            if not self.is_calls_page(page_uri):
                raise PermanentUpstreamError(NOT_CALLS)
            uri = page_uri
        else:
            start = since.isoformat() if since else ""
            uri = f"{self.calls_path}?{urlencode({'StartTime>': start, 'PageSize': CALLS_PAGE})}"
        url = self.api_url + uri
        send = partial(self.session.get, url, timeout=self.timeout, allow_redirects=False)
        self.sent += 1
        response = send_observed(self.guard, "Twilio", url, send, _rate_limit)
        if response.status_code in (401, 403):
            raise PermanentUpstreamError(f"Twilio answered {response.status_code}: {REFUSED}")
        if response.status_code != 200:
            raise UpstreamError(f"Twilio answered {response.status_code}")
        try:
            page = response.json()
        except ValueError:
            raise UpstreamError("Twilio answered with no JSON page") from None
        if not isinstance(page, dict):
            raise UpstreamError("Twilio answered with no JSON page")
        return page

    def is_calls_page(self, page_uri: str) -> bool:
        """Tell whether a page Twilio names is a page of this account's Calls list."""
        return len(page_uri) <= MAX_PAGE_URI and bool(self._next_page.fullmatch(page_uri))


def _rate_limit(response: requests.Response) -> tuple[str, RateLimited] | None:
    """Return the pause reason and error of a 429, None for any other answer."""
    if response.status_code != 429:
        return None
    return "Twilio answered 429", RateLimited(RETRY_AFTER_S, "Twilio 429")
