"""The Zendesk API through zenpy, at any base URL, with 429 handed to our own retry logic."""

from __future__ import annotations

import math
import re
from functools import partial
from typing import Any
from urllib.parse import quote

import requests
from zenpy import Zenpy
from zenpy.lib.api_objects import Comment, Ticket
from zenpy.lib.exception import APIException, RecordNotFoundException, ZenpyException

from middleware.errors import NotApplied, PermanentUpstreamError, RateLimited, UpstreamError
from middleware.integrations.network import UpstreamGuard
from middleware.integrations.upstreams import keep_connections, send_observed

# zenpy builds https://<subdomain>.zendesk.com URLs and reads its replies by that host; we
# give it this placeholder and send each request to the configured base URL instead.
PLACEHOLDER = "https://carryover.zendesk.com"
DEFAULT_RETRY_AFTER = 60.0
MAX_RETRY_AFTER = 3600.0
# Zendesk's own error names ("RecordNotFound", "InvalidEndpoint"): the only part of an error
# body an error message repeats, so a base URL pointed elsewhere cannot echo what it serves.
ERROR_NAME = re.compile(r"[A-Za-z_]{1,64}")
EXPORT_PAGE = 1000  # tickets a page of the incremental export (Zendesk's maximum)
EXPORT_REFUSED = (
    "check integrations.zendesk.email and api_token (the export needs an admin's API token)"
)


class RebasedSession(requests.Session):
    """A session that sends zenpy's placeholder URLs to the configured Zendesk base URL."""

    def __init__(self, base_url: str, guard: UpstreamGuard | None = None) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.guard = guard or UpstreamGuard(allow_private=True)
        self.sent = 0  # requests sent, for the API calls an import reports
        keep_connections(self)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Send the request to the real base URL; raise RateLimited on 429."""
        placeholder_url = str(url)
        real_url = placeholder_url.replace(PLACEHOLDER, self.base_url, 1)
        # The API never redirects; a redirect would leave the host that was checked.
        kwargs["allow_redirects"] = False
        send = partial(super().request, method, real_url, *args, **kwargs)
        self.sent += 1
        response = send_observed(self.guard, "Zendesk", real_url, send, _rate_limit)
        response.url = placeholder_url
        if response.request is not None:
            response.request.url = placeholder_url
        return response


def _rate_limit(response: requests.Response) -> tuple[str, RateLimited] | None:
    """Return the pause reason and error of a 429, None for any other answer."""
    if response.status_code != 429:
        return None
    # zenpy would sleep in this thread; we pause Zendesk for every worker instead.
    retry_after = _retry_after(response.headers.get("Retry-After"))
    return "Zendesk answered 429", RateLimited(retry_after, "Zendesk 429")


def _retry_after(value: str | None) -> float:
    """Read Retry-After seconds, kept between 1 s and an hour (a bad value gets the default)."""
    try:
        seconds = float(value) if value else DEFAULT_RETRY_AFTER
    except ValueError:
        return DEFAULT_RETRY_AFTER
    if not math.isfinite(seconds):
        return DEFAULT_RETRY_AFTER
    return min(max(1.0, seconds), MAX_RETRY_AFTER)


class ZendeskClient:
    """The few Zendesk calls Carryover makes: read users, write and find private notes."""

    def __init__(
        self, url: str, email: str, api_token: str, timeout: float,
        guard: UpstreamGuard | None = None,
    ) -> None:  # fmt: skip
        self.session = RebasedSession(url, guard)
        self.api = Zenpy(
            subdomain="carryover",
            email=email,
            token=api_token,
            session=self.session,
            timeout=timeout,
            disable_cache=True,
        )

    def user_with_identities(self, user_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Return the user and their identities, or ({}, []) when the user is gone.

        One call (show_many with the identities side-loaded), not the two of Show User and
        List Identities: a lookup costs half the API budget, and the JSON is read as sent.
        """
        users, identities = self.users_with_identities([user_id])
        user = next((u for u in users if u.get("id") == user_id), None)
        if user is None:
            return {}, []
        return user, [i for i in identities if i.get("user_id") in (None, user_id)]

    def users_with_identities(
        self, user_ids: list[int]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Return up to 100 users and all their identities in one call (show_many)."""
        try:
            found = self.api.users(ids=user_ids, include=["identities"])
        except (APIException, ZenpyException, requests.HTTPError) as exc:
            raise _upstream_error(exc) from exc
        page = _raw_page(found)
        return _objects(page, "users"), _objects(page, "identities")

    def export_tickets(self, start_time: int | None, cursor: str | None) -> dict[str, Any]:
        """Return one page of the incremental ticket export, its users side-loaded.

        The first page starts at a time, the next ones at the cursor the last one gave.
        """
        # zenpy joins the query's values as they are: the cursor's + / = must be escaped here.
        wanted = {"cursor": quote(cursor, safe="")} if cursor else {"start_time": start_time}
        tickets = self.api.tickets
        try:
            # zenpy's incremental() would turn the 1,000 tickets and their users into objects,
            # which the import turns back into JSON: a third of its time. The same request
            # (zenpy's URL, session, 429 and error handling) is asked for as it came.
            export = tickets.endpoint.incremental
            endpoint = export.cursor if cursor else export.cursor_start
            url = tickets._build_url(endpoint(**wanted, include=["users"], per_page=EXPORT_PAGE))
            response = tickets._get(url, raw_response=True)
        except (APIException, ZenpyException, requests.HTTPError) as exc:
            error = _upstream_error(exc)
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                raise PermanentUpstreamError(f"{error}: {EXPORT_REFUSED}") from exc
            raise error from exc
        try:
            page = response.json()
        except ValueError:
            page = None
        if not isinstance(page, dict):
            raise UpstreamError("Zendesk answered the export with no JSON page")
        return page

    def whoami(self) -> str:
        """Return the name and role of the agent the API token belongs to."""
        try:
            me = self.api.users.me()
        except (APIException, ZenpyException, requests.HTTPError) as exc:
            raise _upstream_error(exc) from exc
        return f"{me.name} <{me.email}>, role {me.role}"

    def add_private_note(self, ticket_id: int, body: str, html_body: str | None = None) -> None:
        """Add a private comment to a ticket (one PUT, no read first), as HTML if given."""
        comment = (
            Comment(html_body=html_body, public=False)
            if html_body is not None
            else Comment(body=body, public=False)
        )
        tickets = self.api.tickets
        try:
            # The request zenpy's update() sends (its URL, payload, session and error
            # handling), without turning Zendesk's answer, the ticket and its audit, into
            # objects nobody reads: that cost as much CPU as the rest of the call.
            url = tickets._build_url(tickets.endpoint(id=ticket_id))
            payload = {"ticket": tickets._serialize(Ticket(id=ticket_id, comment=comment))}
            tickets._call_api(tickets.session.put, url, json=payload, timeout=tickets.timeout)
        except RecordNotFoundException as exc:
            raise PermanentUpstreamError(f"Zendesk ticket {ticket_id} not found") from exc
        except (APIException, ZenpyException, requests.HTTPError) as exc:
            raise _upstream_error(exc) from exc

    def has_comment_containing(self, ticket_id: int, needle: str) -> bool:
        """Tell whether any comment on the ticket contains the text."""
        try:
            comments = self.api.tickets.comments(ticket=ticket_id)
            return any(needle in (c.body or "") for c in comments)
        except RecordNotFoundException:
            return False
        except (APIException, ZenpyException, requests.HTTPError) as exc:
            raise _upstream_error(exc) from exc


def _raw_page(found: Any) -> dict[str, Any]:
    """Return the JSON page a zenpy result generator was built from.

    zenpy turns a page into objects and keeps side-loads and cursors to itself; an import
    needs the page as Zendesk sent it (its cursor, end_of_stream, the side-loaded users).
    """
    page = getattr(found, "_response_json", None)
    if not isinstance(page, dict):
        raise UpstreamError("Zendesk answered with no JSON page")
    return page


def _objects(page: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Return a page's list of objects, leaving out anything that is not one."""
    found = page.get(name)
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []


def _upstream_error(exc: Exception) -> UpstreamError:
    """Say what Zendesk answered: its status and error name, never the body it sent."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is None:
        return UpstreamError(f"Zendesk: {type(exc).__name__}")
    message = f"Zendesk answered {status}"
    name = _error_name(response)
    if name:
        message += f" ({name})"
    if status in (400, 401, 403, 404, 422):
        return PermanentUpstreamError(message)
    if status == 503:  # unavailable: the request was turned away, not half done
        return NotApplied(message)
    return UpstreamError(message)


def _error_name(response: Any) -> str | None:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    if isinstance(error, dict):
        error = error.get("title") or error.get("message")
    return error if isinstance(error, str) and ERROR_NAME.fullmatch(error) else None
