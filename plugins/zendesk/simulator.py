"""Local fake of the Zendesk Support REST API for tests, benchmarks and demos."""

from __future__ import annotations

import argparse
import html
import itertools
import json
import re
import threading
import time
from collections import deque
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from plugins.fake_server import FakeServer

BOT_USER_ID = 900000000001
RATE_LIMIT = 700
JSON_TYPE = "application/json; charset=utf-8"
RATE_LIMITED = (
    "Rate limit for ticket updates exceeded, please wait before updating this ticket again"
)
UNAUTHORIZED = {"error": "Couldn't authenticate you"}
NOT_FOUND = {"error": "RecordNotFound", "description": "Not found"}
NO_ENDPOINT = {"error": "InvalidEndpoint", "description": "Not found"}
UNPARSABLE = {"error": "Unprocessable", "description": "Server could not parse JSON"}
BLANK_COMMENT = {"error": "RecordInvalid", "description": "Record validation errors"}
TICKET_FIELDS = ("subject", "status", "priority", "type", "assignee_id", "group_id", "tags")

ROUTES = Map(
    [
        Rule("/api/v2/users/show_many.json", endpoint="show_many", methods=["GET"]),
        Rule("/api/v2/users/me.json", endpoint="me", methods=["GET"]),
        Rule("/api/v2/users/<int:user_id>.json", endpoint="user", methods=["GET"]),
        Rule("/api/v2/users/<int:user_id>/identities.json", endpoint="identities", methods=["GET"]),
        Rule("/api/v2/tickets/<int:ticket_id>.json", endpoint="ticket", methods=["GET"]),
        Rule("/api/v2/tickets/<int:ticket_id>.json", endpoint="update_ticket", methods=["PUT"]),
        Rule("/api/v2/tickets/<int:ticket_id>/comments.json", endpoint="comments", methods=["GET"]),
        Rule("/api/v2/search.json", endpoint="search", methods=["GET"]),
    ]
)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _via(channel: str) -> dict:
    return {"channel": channel, "source": {"from": {}, "to": {}, "rel": None}}


def _page(key: str, items: list[dict], request: Request | None = None) -> dict[str, Any]:
    """Wrap a list as one offset page, or one cursor page when `page[size]` is asked for."""
    if request is not None and "page[size]" in request.args:
        cursors = {"has_more": False, "after_cursor": None, "before_cursor": None}
        return {key: items, "meta": cursors, "links": {"prev": None, "next": None}}
    return {key: items, "next_page": None, "previous_page": None, "count": len(items)}


def _json(payload: dict, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type=JSON_TYPE)


class FakeZendesk(FakeServer):
    """Serve a fake Zendesk REST API on 127.0.0.1 for tests, benchmarks and demos."""

    def __init__(
        self,
        email: str = "bot@example.com",
        api_token: str = "test-token",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.email = email
        self.api_token = api_token
        self.delay_seconds: float = 0.0
        self.users: dict[int, dict] = {}
        self.identities: dict[int, list[dict]] = {}
        self.tickets: dict[int, dict] = {}
        self.comments: dict[int, list[dict]] = {}
        self.requests_log: list[tuple[str, str, bytes, float]] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(10000000001)
        self._failures: deque[tuple[int, dict, dict | None]] = deque()
        self._recent: deque[float] = deque()
        super().__init__(host, port)
        self.add_user(BOT_USER_ID, "Carryover Bot", email=email)["role"] = "agent"

    def add_user(
        self,
        user_id: int,
        name: str,
        email: str | None = None,
        phone: str | None = None,
        extra_identities: list[dict] | None = None,
    ) -> dict:
        """Create an end user with email, phone and extra identities and return its JSON."""
        stamp = _now()
        user = {
            "id": user_id,
            "url": f"{self.url}/api/v2/users/{user_id}.json",
            "name": name,
            "email": email,
            "phone": phone,
            "role": "end-user",
            "active": True,
            "time_zone": "UTC",
            "organization_id": None,
            "tags": [],
            "created_at": stamp,
            "updated_at": stamp,
        }
        wanted = [{"type": "email", "value": email}] if email else []
        wanted += [{"type": "phone_number", "value": phone}] if phone else []
        identities: list[dict] = []
        with self._lock:
            for spec in wanted + (extra_identities or []):
                identity_id = next(self._ids)
                first_of_type = all(i["type"] != spec["type"] for i in identities)
                identities.append(
                    {
                        "url": f"{self.url}/api/v2/users/{user_id}/identities/{identity_id}.json",
                        "id": identity_id,
                        "user_id": user_id,
                        "type": spec["type"],
                        "value": spec["value"],
                        "verified": spec.get("verified", True),
                        "primary": spec.get("primary", first_of_type),
                        "created_at": stamp,
                        "updated_at": stamp,
                    }
                )
            self.users[user_id] = user
            self.identities[user_id] = identities
        return user

    def add_ticket(
        self,
        ticket_id: int,
        requester_id: int,
        subject: str,
        status: str = "open",
        channel: str = "web",
    ) -> dict:
        """Create a ticket whose opening public comment is its subject and return its JSON."""
        stamp = _now()
        ticket = {
            "id": ticket_id,
            "url": f"{self.url}/api/v2/tickets/{ticket_id}.json",
            "via": _via(channel),
            "created_at": stamp,
            "updated_at": stamp,
            "type": None,
            "subject": subject,
            "description": subject,
            "priority": None,
            "status": status.lower(),
            "requester_id": requester_id,
            "submitter_id": requester_id,
            "assignee_id": None,
            "group_id": None,
            "tags": [],
        }
        opening = self._comment(requester_id, {"body": subject}, channel, stamp)
        with self._lock:
            self.tickets[ticket_id] = ticket
            self.comments[ticket_id] = [opening]
        return ticket

    def fail_next(
        self, status: int, count: int = 1, headers: dict | None = None, body: dict | None = None
    ) -> None:
        """Answer the next `count` requests with this status, headers and body."""
        with self._lock:
            self._failures.extend([(status, dict(headers or {}), body)] * count)

    def notes(self, ticket_id: int) -> list[dict]:
        """Return the private comments written to a ticket."""
        with self._lock:
            return [c for c in self.comments.get(ticket_id, []) if not c["public"]]

    def _comment(self, author_id: int, given: dict, channel: str, stamp: str) -> dict:
        body, html_body = given.get("body"), given.get("html_body")
        if html_body is None:
            markup = html.escape(body or "").replace("\n", "<br>")
            html_body = f'<div class="zd-comment" dir="auto">{markup}</div>'
        if body is None:
            text = re.sub(r"<br\s*/?>|</p>\s*<p>", "\n", html_body)
            body = html.unescape(re.sub(r"<[^>]+>", "", text)).strip()
        return {
            "id": next(self._ids),
            "type": "Comment",
            "author_id": author_id,
            "body": body,
            "html_body": html_body,
            "plain_body": body,
            "public": bool(given.get("public", True)),
            "attachments": [],
            "audit_id": next(self._ids),
            "via": _via(channel),
            "metadata": {},
            "created_at": stamp,
        }

    def _wsgi(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        received = time.monotonic()
        query = request.query_string.decode("latin-1")
        path = f"{request.path}?{query}" if query else request.path
        with self._lock:
            self.requests_log.append((request.method, path, request.get_data(), received))
            self._recent.append(received)
            while self._recent[0] < received - 60:
                self._recent.popleft()
            remaining = max(RATE_LIMIT - len(self._recent), 0)
            failure = self._failures.popleft() if self._failures else None
        if self.delay_seconds > 0:
            time.sleep(self.delay_seconds)
        response = self._failure(*failure) if failure else self._dispatch(request)
        response.headers.setdefault("X-Rate-Limit", str(RATE_LIMIT))
        response.headers.setdefault("X-Rate-Limit-Remaining", str(remaining))
        return response(environ, start_response)

    def _failure(self, status: int, headers: dict, body: dict | None) -> Response:
        if body is None and status == 429:
            response = Response(RATE_LIMITED, 429, content_type="text/plain; charset=utf-8")
        else:
            response = _json(body or {"error": HTTP_STATUS_CODES.get(status, "Error")}, status)
        response.headers.update(headers)
        return response

    def _dispatch(self, request: Request) -> Response:
        auth = request.authorization
        expected = (f"{self.email}/token", self.api_token)
        if auth is None or auth.type != "basic" or (auth.username, auth.password) != expected:
            return _json(UNAUTHORIZED, 401)
        try:
            endpoint, args = ROUTES.bind_to_environ(request.environ).match()
        except HTTPException:
            return _json(NO_ENDPOINT, 404)
        with self._lock:
            response: Response = getattr(self, f"_api_{endpoint}")(request, **args)
            return response

    def _api_me(self, request: Request) -> Response:
        return _json({"user": self.users[BOT_USER_ID]})

    def _api_user(self, request: Request, user_id: int) -> Response:
        user = self.users.get(user_id)
        return _json({"user": user}) if user else _json(NOT_FOUND, 404)

    def _api_identities(self, request: Request, user_id: int) -> Response:
        if user_id not in self.users:
            return _json(NOT_FOUND, 404)
        return _json(_page("identities", self.identities.get(user_id, []), request))

    def _api_show_many(self, request: Request) -> Response:
        ids = [int(i) for i in request.args.get("ids", "").split(",") if i.strip().isdigit()]
        found = [self.users[uid] for uid in ids if uid in self.users]
        payload = _page("users", found)
        if "identities" in request.args.get("include", "").split(","):
            payload["identities"] = [i for u in found for i in self.identities.get(u["id"], [])]
        return _json(payload)

    def _api_ticket(self, request: Request, ticket_id: int) -> Response:
        ticket = self.tickets.get(ticket_id)
        return _json({"ticket": ticket}) if ticket else _json(NOT_FOUND, 404)

    def _api_comments(self, request: Request, ticket_id: int) -> Response:
        if ticket_id not in self.tickets:
            return _json(NOT_FOUND, 404)
        comments = list(self.comments.get(ticket_id, []))
        if request.args.get("sort_order") == "desc":
            comments.reverse()
        return _json(_page("comments", comments, request))

    def _api_update_ticket(self, request: Request, ticket_id: int) -> Response:
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            return _json(NOT_FOUND, 404)
        try:
            changes = json.loads(request.get_data())["ticket"]
            given = changes.get("comment") or {}
        except (ValueError, TypeError, KeyError, AttributeError):
            return _json(UNPARSABLE, 400)
        if given and not (given.get("body") or given.get("html_body")):
            return _json(BLANK_COMMENT | {"details": {"base": ["Comment: cannot be blank"]}}, 422)
        stamp = _now()
        audit_id = next(self._ids)
        events: list[dict] = []
        if given:
            comment = self._comment(given.get("author_id", BOT_USER_ID), given, "api", stamp)
            comment["audit_id"] = audit_id
            self.comments.setdefault(ticket_id, []).append(comment)
            hidden = ("via", "metadata", "created_at")
            events.append({key: value for key, value in comment.items() if key not in hidden})
        for field in TICKET_FIELDS:
            value = changes.get(field, ticket[field])
            value = value.lower() if field == "status" else value
            if value != ticket[field]:
                event = {"id": next(self._ids), "type": "Change", "field_name": field}
                events.append(event | {"value": value, "previous_value": ticket[field]})
                ticket[field] = value
        ticket["updated_at"] = stamp
        audit = {
            "id": audit_id,
            "ticket_id": ticket_id,
            "created_at": stamp,
            "author_id": BOT_USER_ID,
            "metadata": {},
            "via": _via("api"),
            "events": events,
        }
        return _json({"ticket": ticket, "audit": audit})

    def _api_search(self, request: Request) -> Response:
        query = request.args.get("query", "").split()
        terms = dict(term.split(":", 1) for term in query if ":" in term)
        terms.setdefault("type", request.args.get("filter[type]", ""))
        requester = terms.get("requester_id", terms.get("requester", ""))
        results: list[dict] = []
        if terms.get("type") == "ticket" and requester.isdigit():
            for ticket in self.tickets.values():
                if ticket["requester_id"] == int(requester):
                    results.append(ticket | {"result_type": "ticket"})
        return _json(_page("results", results) | {"facets": None})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve a fake Zendesk REST API until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--email", default="bot@example.com")
    parser.add_argument("--token", default="test-token")
    parser.add_argument(
        "--seed", action="store_true", help="add the requester and tickets of the fixtures"
    )
    options = parser.parse_args()
    fake = FakeZendesk(options.email, options.token, options.host, options.port)
    if options.seed:
        # The requester and tickets that plugins/zendesk/fixtures/ talk about.
        fake.add_user(
            8447388090501, "Ann Example", email="ann.example@example.com", phone="+14155550142"
        )
        for ticket_id in (5141, 5149, 5158, 5160):
            fake.add_ticket(ticket_id, 8447388090501, f"ticket {ticket_id}")
    print(f"Fake Zendesk at {fake.url} (user {options.email}/token, token {options.token})")
    fake.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()
