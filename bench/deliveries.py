"""Signed Zendesk `ticket.created` deliveries, each with its own event id."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plugins.zendesk import sign

FIXTURES = Path(__file__).resolve().parent.parent / "plugins" / "zendesk" / "fixtures"
WEBHOOK_SECRET = "YmVuY2htYXJrLW9ubHktc2lnbmluZy1zZWNyZXQ="
HOOK_PATH = "/hooks/zendesk"


def load_fixture(name: str) -> dict[str, Any]:
    """Return a Zendesk fixture as a dict."""
    return json.loads((FIXTURES / name).read_bytes())


def signed_headers(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    """Sign a body as Zendesk does, with the current time as the signature timestamp."""
    timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "Content-Type": "application/json",
        "X-Zendesk-Webhook-Signature": sign(secret, timestamp, body),
        "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
        "X-Zendesk-Webhook-Id": "01GTXYZ0000000000000000000",
    }


class TicketCreated:
    """Make `ticket.created` deliveries from a fixture: a fresh event id each time."""

    def __init__(self, fixture: str = "ticket_created.json") -> None:
        self.payload = load_fixture(fixture)

    def delivery(self, ticket_id: int | None = None) -> tuple[bytes, dict[str, str]]:
        """Return (body, headers) of a new, validly signed delivery."""
        payload = dict(self.payload, id=str(uuid.uuid4()))
        if ticket_id is not None:
            payload["detail"] = dict(payload["detail"], id=str(ticket_id))
            payload["subject"] = f"zen:ticket:{ticket_id}"
        body = json.dumps(payload).encode()
        return body, signed_headers(body)
