"""The Twilio API calls Carryover makes: the account's Calls list (for an import), one
Recording (which call it belongs to) and a Voice Intelligence transcript with its sentences."""

from __future__ import annotations

import re
from datetime import date
from functools import partial
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from middleware.errors import PermanentUpstreamError, RateLimited, UpstreamError
from middleware.integrations.network import UpstreamGuard
from middleware.integrations.upstreams import send_observed

CALLS_PAGE = 1000  # calls a page: Twilio's largest PageSize
RETRY_AFTER_S = 5.0  # Twilio's 429 (error 20429) names no wait
MAX_PAGE_URI = 2000
REFUSED = "check integrations.twilio.account_sid and auth_token"
NOT_CALLS = "Twilio named a next page that is not this account's calls"
SENTENCES_PAGE = 1000  # sentences a page (Twilio allows up to 5,000)
MAX_SENTENCE_PAGES = 20  # a call of many hours; what an agent reads is an excerpt anyway
NOT_SENTENCES = "Twilio named a next page that is not this transcript's sentences"
# A next page's query as Twilio writes it (PageSize, Page, PageToken): nothing else.
NEXT_QUERY = re.compile(r"[A-Za-z0-9%&=._~+-]{1,1900}")


class TwilioClient:
    """Read the Calls list of one account, a page at a time, with HTTP basic auth."""

    def __init__(
        self, api_url: str, account_sid: str, auth_token: str, timeout: float,
        guard: UpstreamGuard | None = None, intelligence_url: str = "https://intelligence.twilio.com",
    ) -> None:  # fmt: skip
        self.api_url = api_url.rstrip("/")
        self.intelligence_url = intelligence_url.rstrip("/")
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
        # A 404 of the list is no missing record: it is retried like any other failure.
        return self._get_json(self.api_url + uri, "the calls page", missing_is_final=False)

    def recording_call(self, recording_sid: str) -> str | None:
        """Return the SID of the call a recording belongs to (a SID checked by the caller)."""
        path = f"/2010-04-01/Accounts/{self.account_sid}/Recordings/{recording_sid}.json"
        recording = self._get_json(self.api_url + path, "the recording")
        return recording.get("call_sid") if isinstance(recording.get("call_sid"), str) else None

    def transcript(self, transcript_sid: str) -> dict[str, Any]:
        """Return a Voice Intelligence transcript (a SID checked by the caller)."""
        url = f"{self.intelligence_url}/v2/Transcripts/{transcript_sid}"
        return self._get_json(url, "the transcript")

    def sentences(self, transcript_sid: str) -> list[dict[str, Any]]:
        """Return every sentence of a transcript, page after page, in order."""
        path = f"/v2/Transcripts/{transcript_sid}/Sentences"
        url = f"{self.intelligence_url}{path}?{urlencode({'PageSize': SENTENCES_PAGE})}"
        sentences: list[dict[str, Any]] = []
        for _ in range(MAX_SENTENCE_PAGES):
            page = self._get_json(url, "the sentences")
            found = page.get("sentences")
            if not isinstance(found, list):
                raise UpstreamError("Twilio sent a Sentences page without sentences")
            sentences += [s for s in found if isinstance(s, dict)]
            meta = page.get("meta")
            next_url = meta.get("next_page_url") if isinstance(meta, dict) else None
            if not next_url:
                break
            url = self.intelligence_url + self._next_sentences(path, next_url)
        return sentences

    @staticmethod
    def _next_sentences(path: str, next_url: Any) -> str:
        """Return the path and query of a next page, on this transcript's sentences only."""
        parts = urlsplit(next_url) if isinstance(next_url, str) and len(next_url) < 2000 else None
        if parts is None or parts.path != path or not NEXT_QUERY.fullmatch(parts.query):
            raise PermanentUpstreamError(NOT_SENTENCES)
        return f"{path}?{parts.query}"

    def _get_json(self, url: str, what: str, *, missing_is_final: bool = True) -> dict[str, Any]:
        """GET one JSON object; raise as the history and read-back callers expect."""
        send = partial(self.session.get, url, timeout=self.timeout, allow_redirects=False)
        self.sent += 1
        response = send_observed(self.guard, "Twilio", url, send, _rate_limit)
        if response.status_code in (401, 403):
            raise PermanentUpstreamError(f"Twilio answered {response.status_code}: {REFUSED}")
        if response.status_code == 404 and missing_is_final:
            raise PermanentUpstreamError(f"Twilio has no such record ({what}): 404")
        if response.status_code != 200:
            raise UpstreamError(f"Twilio answered {response.status_code} for {what}")
        try:
            found = response.json()
        except ValueError:
            raise UpstreamError(f"Twilio answered with no JSON for {what}") from None
        if not isinstance(found, dict):
            raise UpstreamError(f"Twilio answered with no JSON object for {what}")
        return found

    def is_calls_page(self, page_uri: str) -> bool:
        """Tell whether a page Twilio names is a page of this account's Calls list."""
        return len(page_uri) <= MAX_PAGE_URI and bool(self._next_page.fullmatch(page_uri))


def _rate_limit(response: requests.Response) -> tuple[str, RateLimited] | None:
    """Return the pause reason and error of a 429, None for any other answer."""
    if response.status_code != 429:
        return None
    return "Twilio answered 429", RateLimited(RETRY_AFTER_S, "Twilio 429")
