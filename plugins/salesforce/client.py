"""The Salesforce REST API through simple-salesforce, at any instance or login URL."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import requests
from simple_salesforce import Salesforce, SFType, format_soql
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceResourceNotFound,
)

from middleware.errors import NotApplied, PermanentUpstreamError, RateLimited, UpstreamError
from middleware.integrations.network import UpstreamGuard
from middleware.integrations.upstreams import keep_connections, send_observed
from middleware.integrations.usage import ApiUsage
from middleware.store.tables import utcnow
from plugins.salesforce.ids import SALESFORCE_ID

T = TypeVar("T")
# simple-salesforce logs in at https://{domain}.salesforce.com; a login URL elsewhere (a proxy,
# a local simulator) is reached through this placeholder, which the session sends there.
LOGIN_PLACEHOLDER = "carryover-login"
SALESFORCE_HOST = ".salesforce.com"
# The records Carryover reads back by id (see SalesforcePlugin.read_back).
READABLE = frozenset({"Case", "Contact", "CaseComment"})
# Salesforce's error codes ("INVALID_FIELD"): the only part of an error body a message
# repeats, so a base URL pointed elsewhere cannot echo what it serves.
ERROR_CODE = re.compile(r"[A-Z_]{1,64}")
MAX_SESSION_ID = 512
QUERY_BATCH = 2000  # records a query batch: Salesforce's largest
# What a query's nextRecordsUrl looks like: /services/data/v59.0/query/01gD0000002HU6KIAW-2000
QUERY_LOCATOR = re.compile(
    r"/services/data/v[0-9]{1,3}\.[0-9]/query(All)?/[A-Za-z0-9]{15,18}-[0-9]{1,9}"
)


def require_id(value: str, what: str) -> str:
    """Return a Salesforce record id (15 or 18 letters and digits) as given.

    Ids go into REST URLs (/sobjects/Contact/<id>): anything else, such as
    "http://host/x" or "../../User/005…", never gets there.
    """
    if not isinstance(value, str) or not SALESFORCE_ID.fullmatch(value):
        raise PermanentUpstreamError(f"{what} {value!r} is not a Salesforce id")
    return value


class SessionExpired(UpstreamError):
    """Salesforce refused the session (401 INVALID_SESSION_ID)."""


class LoginRefused(UpstreamError):
    """Salesforce refused the configured login or session."""


class LimitExceeded(RateLimited):
    """The org's rolling 24-hour API allocation is used up (403 REQUEST_LIMIT_EXCEEDED)."""


def login_domain(login_url: str) -> tuple[str, str | None]:
    """Return simple-salesforce's domain for a login URL, and the URL to rebase it to."""
    parts = urlsplit(login_url)
    host = parts.hostname or ""
    if parts.scheme == "https" and parts.port in (None, 443) and host.endswith(SALESFORCE_HOST):
        return host[: -len(SALESFORCE_HOST)], None  # login, test, acme.my: used as given
    return LOGIN_PLACEHOLDER, login_url.rstrip("/")


class SalesforceSession(requests.Session):
    """A session that sends simple-salesforce's https:// URLs to the configured bases.

    simple-salesforce always builds https://host:port URLs. A base configured with http://
    (a local simulator) is reached over http, and the login placeholder goes to the login
    URL. Every reply's Sforce-Limit-Info is kept, and the two answers that simple-salesforce
    would otherwise handle itself become our own errors: 401 INVALID_SESSION_ID (it would
    log in again without limit) and 403 REQUEST_LIMIT_EXCEEDED (which has no Retry-After).
    """

    def __init__(
        self, bases: Mapping[str, str], timeout: float, limit_backoff_s: float,
        guard: UpstreamGuard | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.bases = dict(bases)
        self.timeout = timeout
        self.limit_backoff_s = limit_backoff_s
        self.guard = guard or UpstreamGuard(allow_private=True)
        self.usage: ApiUsage | None = None
        self.sent = 0  # requests sent, for the API calls an import reports
        keep_connections(self)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Send the request to the configured base; raise our errors for limits and sessions."""
        kwargs.setdefault("timeout", self.timeout)
        # The API does not redirect; a redirect would leave the host that was checked.
        kwargs["allow_redirects"] = False
        target = self.rebased(str(url))
        send = partial(self._send_keeping_usage, method, target, *args, **kwargs)
        response = send_observed(self.guard, "Salesforce", target, send, self._rate_limit)
        if response.status_code == 401 and "INVALID_SESSION_ID" in response.text:
            raise SessionExpired("Salesforce refused the session (INVALID_SESSION_ID)")
        return response

    def _send_keeping_usage(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent += 1
        response = super().request(*args, **kwargs)
        self._keep_usage(response.headers.get("Sforce-Limit-Info"))
        return response

    def _rate_limit(self, response: requests.Response) -> tuple[str, RateLimited] | None:
        if response.status_code == 403 and "REQUEST_LIMIT_EXCEEDED" in response.text:
            # The org's 24-hour allocation is used up: no call helps until it frees up.
            detail = "Salesforce REQUEST_LIMIT_EXCEEDED"
            return detail, LimitExceeded(self.limit_backoff_s, detail)
        return None

    def rebased(self, url: str) -> str:
        """Return the URL with its https://host:port replaced by the configured base."""
        for origin, base in self.bases.items():
            if url == origin or url.startswith(origin + "/"):
                return base + url[len(origin) :]
        return url

    def _keep_usage(self, header: str | None) -> None:
        # "api-usage=25/15000", possibly followed by per-app usage after a comma.
        if not header:
            return
        for part in header.split(","):
            name, _, value = part.strip().partition("=")
            used, _, allowed = value.partition("/")
            if name == "api-usage" and used.isdigit() and allowed.isdigit():
                self.usage = ApiUsage(int(used), int(allowed), utcnow())


def session_bases(options: Mapping[str, Any]) -> dict[str, str]:
    """Map the https:// origins simple-salesforce will call to the configured URLs."""
    bases = {}
    for key in ("instance_url", "login_url"):
        url = (options.get(key) or "").rstrip("/")
        parts = urlsplit(url)
        if parts.scheme == "http" and parts.netloc:
            bases[f"https://{parts.netloc}"] = f"http://{parts.netloc}"
    domain, rebase_to = login_domain(options["login_url"])
    if rebase_to:
        bases[f"https://{domain}{SALESFORCE_HOST}"] = rebase_to
    return bases


class SalesforceClient:
    """The few Salesforce calls Carryover makes: read contacts, write and find case comments."""

    def __init__(self, options: Mapping[str, Any], guard: UpstreamGuard | None = None) -> None:
        self.options = dict(options)
        self.session = SalesforceSession(
            session_bases(self.options),
            self.options["timeout_s"],
            self.options["limit_backoff_s"],
            guard,
        )
        self._api: Salesforce | None = None
        self._lock = threading.Lock()
        self.logins = 0

    @property
    def can_log_in(self) -> bool:
        """Tell whether the client logs in itself (and can renew an expired session)."""
        return not self.options.get("session_id")

    # -- the calls -------------------------------------------------------------------------
    def contact(self, contact_id: str) -> dict[str, Any]:
        """Return a contact's fields, or {} when the contact is gone."""
        return self.record("Contact", contact_id) or {}

    def record(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        """Return a Case's, Contact's or CaseComment's fields, or None when it is not there."""
        if sobject not in READABLE:
            raise PermanentUpstreamError(f"Carryover does not read {sobject!r} records")
        require_id(record_id, f"{sobject} id")

        def call(api: Salesforce) -> dict[str, Any] | None:
            try:
                return dict(_sobject(api, sobject).get(record_id))
            except SalesforceResourceNotFound:
                return None

        return self._call(call)

    def add_case_comment(self, case_id: str, body: str) -> None:
        """Add a private comment (IsPublished false) to a case."""
        require_id(case_id, "Case id")
        comment = {"ParentId": case_id, "CommentBody": body, "IsPublished": False}
        self._call(lambda api: _sobject(api, "CaseComment").create(comment))

    def session_org(self, session_id: str) -> str | None:
        """Return the org id of a session (e.g. an Outbound Message's), None if refused.

        It asks the configured instance (never a URL the message names) for the session's
        Organization: a working session of the org proves its holder.
        """
        if not (0 < len(session_id) <= MAX_SESSION_ID and session_id.isascii()
                and session_id.isprintable() and " " not in session_id):  # fmt: skip
            return None
        url = self.instance_base() + f"/services/data/v{self.options['api_version']}/query/"
        headers = {"Authorization": f"Bearer {session_id}", "Accept": "application/json"}
        try:
            response = self.session.get(
                url, params={"q": "SELECT Id FROM Organization"}, headers=headers
            )
        except SessionExpired:
            return None
        if response.status_code in (401, 403):
            return None
        if response.status_code != 200:
            raise UpstreamError(f"Salesforce answered {response.status_code}")
        try:
            records = response.json()["records"]
            org = str(records[0]["Id"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise UpstreamError("Salesforce answered with no Organization") from None
        return org

    def instance_base(self) -> str:
        """Return the org's instance URL: the configured one, else the one logged in to."""
        configured = (self.options.get("instance_url") or "").rstrip("/")
        if configured:
            return configured
        return self._call(lambda api: f"https://{api.sf_instance}")

    def case_comment_bodies(self, case_id: str) -> list[str]:
        """Return the bodies of every comment on a case."""
        require_id(case_id, "Case id")
        soql = format_soql("SELECT Id, CommentBody FROM CaseComment WHERE ParentId = {}", case_id)
        result = self._call(lambda api: api.query_all(soql))
        return [str(r.get("CommentBody") or "") for r in result.get("records", [])]

    def query_page(self, soql: str) -> dict[str, Any]:
        """Return the first batch of a query's records (up to 2,000), with nextRecordsUrl."""
        headers = {"Sforce-Query-Options": f"batchSize={QUERY_BATCH}"}
        return dict(self._call(lambda api: api.query(soql, headers=headers)))

    def query_more(self, next_records_url: str) -> dict[str, Any]:
        """Return the next batch of a query (queryMore), by the URL the last batch named."""
        if not QUERY_LOCATOR.fullmatch(next_records_url):
            raise PermanentUpstreamError(
                "Salesforce named a next batch that is not a query locator"
            )
        headers = {"Sforce-Query-Options": f"batchSize={QUERY_BATCH}"}
        return dict(self._call(lambda api: api.query_more(next_records_url, True, headers=headers)))

    def daily_api_requests(self) -> tuple[int, int] | None:
        """Return the org's (remaining, max) API requests of the last 24 hours."""
        found = self._call(lambda api: api.limits()).get("DailyApiRequests")
        if not isinstance(found, dict):
            return None
        remaining, most = found.get("Remaining"), found.get("Max")
        if not isinstance(remaining, int) or not isinstance(most, int):
            return None
        return remaining, most

    def whoami(self) -> str:
        """Log in if needed and read one contact id: proof that the API answers."""
        self._call(lambda api: api.query("SELECT Id FROM Contact LIMIT 1"))
        return f"{self._session_api().sf_instance}, API v{self.options['api_version']}"

    # -- sessions, limits and errors -------------------------------------------------------
    def _call(self, call: Callable[[Salesforce], T]) -> T:
        try:
            try:
                return call(self._session_api())
            except SessionExpired:
                if not self.can_log_in:
                    raise LoginRefused(
                        "Salesforce refused session_id (expired?): set a fresh one, or configure "
                        "username/password/security_token or JWT login so Carryover renews it"
                    ) from None
                with self._lock:
                    self._api = None  # log in again, once
                return call(self._session_api())
        except SalesforceAuthenticationFailed as exc:
            raise LoginRefused(f"Salesforce login failed: {exc}") from exc
        except SalesforceError as exc:
            raise _upstream_error(exc) from exc

    def _session_api(self) -> Salesforce:
        with self._lock:
            if self._api is None:
                self._api = self._connect()
            return self._api

    def _connect(self) -> Salesforce:
        o = self.options
        common: dict[str, Any] = {"session": self.session, "version": o["api_version"]}
        if o.get("session_id"):
            return Salesforce(instance_url=o["instance_url"], session_id=o["session_id"], **common)
        domain, _ = login_domain(o["login_url"])
        self.logins += 1
        if o.get("consumer_key"):
            key_file = o.get("private_key_file")
            return Salesforce(
                username=o["username"], consumer_key=o["consumer_key"], domain=domain,
                privatekey=None if key_file else o["private_key"], privatekey_file=key_file,
                **common,
            )  # fmt: skip
        return Salesforce(
            username=o["username"], password=o["password"],
            security_token=o.get("security_token") or "", domain=domain, **common,
        )  # fmt: skip


def _sobject(api: Salesforce, name: str) -> SFType:
    """Return the REST handle of one sObject type (e.g. api.Contact), typed as such."""
    return cast(SFType, getattr(api, name))


def _upstream_error(exc: SalesforceError) -> UpstreamError:
    """Say what Salesforce answered: its status and error code, never the body it sent."""
    status = getattr(exc, "status", None)
    content = getattr(exc, "content", None)
    message = f"Salesforce answered {status}"
    items = content if isinstance(content, list) else [content]
    codes: list[str] = [
        code
        for item in items
        if isinstance(item, dict)
        and isinstance(code := item.get("errorCode"), str)
        and ERROR_CODE.fullmatch(code)
    ]
    if codes:
        message += f" ({', '.join(dict.fromkeys(codes))})"
    if status in (400, 403, 404):  # malformed, refused (e.g. no access), gone: no retry helps
        return PermanentUpstreamError(message)
    if status == 503:  # unavailable (maintenance): the request was turned away, not half done
        return NotApplied(message)
    return UpstreamError(message)
