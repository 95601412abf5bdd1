"""Local simulator of a system without a plugin (a store app, a chatbot, a survey tool).

It sends what such a system sends to /hooks/generic: one Standard Webhooks message per
event (github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md), a JSON
body {"type", "timestamp", "data"} in the shape mappings/generic.yaml reads, with the
webhook-id, webhook-timestamp and webhook-signature headers signed with the whsec_ secret.
A retry sends the same webhook-id again.

    python -m devkit.simulators.generic --carryover http://127.0.0.1:8080 --secret whsec_… \\
        chat --email ann.example@example.com --name "Ann Example" \\
        --say "Where is my refund?" --say "Please call me"
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import requests

from middleware.ingest import standard_webhooks

HOOK_PATH = "/hooks/generic"
BOT_GREETING = "Hi! How can I help you today?"
BOT_ANSWER = "Thanks, I have passed this on to our team."


class RejectedEvent(Exception):
    """Carryover answered an event with another status than 200."""


@dataclass(frozen=True)
class Sent:
    """One event as sent and how Carryover answered."""

    webhook_id: str
    type: str
    status: int
    reply: dict[str, object]


@dataclass(frozen=True)
class Customer:
    """Who the event is about, as the sending system knows them."""

    email: str | None = None
    phone: str | None = None
    name: str | None = None

    def data(self) -> dict[str, str]:
        """Return the customer as the event's data.customer."""
        fields = {"email": self.email, "phone": self.phone, "name": self.name}
        return {k: v for k, v in fields.items() if v}


class GenericSender:
    """Sign and post events to Carryover's /hooks/generic, as a Standard Webhooks sender."""

    def __init__(self, carryover_url: str, secret: str, timeout_s: float = 10.0) -> None:
        self.url = carryover_url.rstrip("/") + HOOK_PATH
        self.secret = secret
        self.timeout_s = timeout_s

    def send(
        self, event_type: str, data: Mapping[str, object], webhook_id: str | None = None
    ) -> Sent:
        """Post one event (a new webhook-id unless one is given: a retry); raise if refused."""
        webhook_id = webhook_id or f"msg_{secrets.token_hex(12)}"
        body = json.dumps({"type": event_type, "timestamp": _now(), "data": data}).encode()
        headers = {"Content-Type": "application/json",
                   **standard_webhooks.headers(self.secret, webhook_id, body)}  # fmt: skip
        # No kept-alive session: a connection left open would hold Carryover's port after it
        # stops (the demo checks the port is free before it starts again).
        response = requests.post(self.url, data=body, headers=headers, timeout=self.timeout_s)
        if response.status_code != 200:
            raise RejectedEvent(f"{event_type}: {response.status_code} {response.text[:200]}")
        return Sent(webhook_id, event_type, response.status_code, response.json())

    def chat(self, customer: Customer, lines: Sequence[str], topic: str = "Chat") -> Sent:
        """Send a chatbot conversation: the bot greets, the customer says each line."""
        messages: list[dict[str, str]] = [{"from": "bot", "text": BOT_GREETING}]
        for line in lines:
            messages += [{"from": "customer", "text": line}, {"from": "bot", "text": BOT_ANSWER}]
        data = {"id": f"conv-{secrets.token_hex(6)}", "customer": customer.data(),
                "bot": "Help bot", "topic": topic, "messages": messages}  # fmt: skip
        return self.send("chatbot.conversation", data)

    def visit(self, customer: Customer, location: str, subject: str, staff: str | None = None,
              notes: str | None = None) -> Sent:  # fmt: skip
        """Send a store visit (a kiosk session when no staff served the customer)."""
        data: dict[str, object] = {"id": f"visit-{secrets.token_hex(6)}",
                                   "customer": customer.data(), "location": location,
                                   "subject": subject}  # fmt: skip
        data.update({k: v for k, v in (("staff", staff), ("notes", notes)) if v is not None})
        return self.send("store.visit", data)

    def survey(self, customer: Customer, preferred: Sequence[str], comment: str = "") -> Sent:
        """Send a survey answer naming the customer's preferred channels."""
        answers = {"preferred_channels": list(preferred), "comment": comment}
        data = {"id": f"resp-{secrets.token_hex(6)}", "customer": customer.data(),
                "survey": "After your visit", "answers": answers}  # fmt: skip
        return self.send("survey.answered", data)


def _now() -> str:
    """Return now as the spec's example writes a timestamp (ISO 8601, UTC, Z)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devkit.simulators.generic",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--carryover", default="http://127.0.0.1:8080")
    parser.add_argument("--secret", default=os.environ.get("GENERIC_SECRET"),
                        help="the whsec_ secret (default $GENERIC_SECRET)")  # fmt: skip
    parser.add_argument("--email")
    parser.add_argument("--phone")
    parser.add_argument("--name")
    events = parser.add_subparsers(dest="event", required=True)
    chat = events.add_parser("chat", help="a chatbot conversation")
    chat.add_argument("--say", action="append", required=True, help="a customer's line")
    visit = events.add_parser("visit", help="a store visit")
    visit.add_argument("--location", required=True)
    visit.add_argument("--subject", required=True)
    visit.add_argument("--staff")
    survey = events.add_parser("survey", help="a survey answer")
    survey.add_argument("--prefer", action="append", required=True, help="a channel")
    survey.add_argument("--comment", default="")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Send one event into Carryover and print how it was answered."""
    options = _parser().parse_args(argv)
    if not options.secret:
        sys.exit("give --secret or set GENERIC_SECRET")
    sender = GenericSender(options.carryover, options.secret)
    customer = Customer(options.email, options.phone, options.name)
    if options.event == "chat":
        sent = sender.chat(customer, options.say)
    elif options.event == "visit":
        sent = sender.visit(customer, options.location, options.subject, options.staff)
    else:
        sent = sender.survey(customer, options.prefer, options.comment)
    print(f"{sent.type} {sent.webhook_id}: {sent.status} {json.dumps(sent.reply)}")


if __name__ == "__main__":
    main()
