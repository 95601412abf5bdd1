"""Deliveries as their senders make them: the plugins' fixtures, changed and signed."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from middleware.ingest import standard_webhooks
from middleware.integrations.plugin import decode_form
from plugins.shopify import sign as shopify_sign
from plugins.zendesk import sign
from tests.values import (
    CTI_SECRET,
    FIXTURES,
    GENERIC_SECRET,
    PLUGINS_DIR,
    SHOPIFY_SECRET,
    SHOPIFY_SHOP,
    ZENDESK_SECRET,
)


def fixture_bytes(name: str) -> bytes:
    """Return a Zendesk fixture file exactly as stored."""
    return (FIXTURES / name).read_bytes()


def zendesk_event(name: str, **detail: Any) -> bytes:
    """Return a fixture with some ticket fields changed (and a fresh event id if given)."""
    payload = json.loads(fixture_bytes(name))
    event_id = detail.pop("event_id", None)
    if event_id:
        payload["id"] = event_id
    payload["detail"].update(detail)
    return json.dumps(payload).encode()


def zendesk_headers(
    body: bytes, secret: str = ZENDESK_SECRET, timestamp: str | None = None
) -> dict:
    """Sign a body as Zendesk does."""
    timestamp = timestamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "Content-Type": "application/json",
        "X-Zendesk-Webhook-Signature": sign(secret, timestamp, body),
        "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
        "X-Zendesk-Webhook-Id": "01GTXYZ0000000000000000000",
    }


def twilio_fields(name: str, **changes: str) -> list[tuple[str, str]]:
    """Return a Twilio fixture's parameters, with some changed (Timestamp=now by default)."""
    fields = dict(decode_form((PLUGINS_DIR / "twilio" / "fixtures" / name).read_bytes()))
    if "Timestamp" in fields:
        fields["Timestamp"] = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    fields.update(changes)
    return list(fields.items())


def cti_body(name: str, **changes: Any) -> bytes:
    """Return a CTI fixture as JSON bytes, with some fields changed."""
    payload = json.loads((PLUGINS_DIR / "cti" / "fixtures" / name).read_bytes())
    payload.update(changes)
    return json.dumps(payload).encode()


def cti_headers(body: bytes, secret: str = CTI_SECRET, timestamp: int | None = None,
                webhook_id: str | None = None) -> dict[str, str]:  # fmt: skip
    """Sign a body as a Standard Webhooks sender does."""
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    signed = standard_webhooks.headers(secret, webhook_id, body, timestamp)
    return {"Content-Type": "application/json", **signed}


def generic_body(name: str, **data: Any) -> bytes:
    """Return a generic inbound fixture as JSON bytes, with some data fields changed."""
    payload = json.loads((PLUGINS_DIR / "generic" / "fixtures" / name).read_bytes())
    payload["data"].update(data)
    return json.dumps(payload).encode()


def generic_headers(body: bytes, secret: str = GENERIC_SECRET, **kwargs: Any) -> dict[str, str]:
    """Sign a body for /hooks/generic as a Standard Webhooks sender does."""
    return cti_headers(body, secret, **kwargs)


def salesforce_fixture(name: str) -> bytes:
    """Return a Salesforce fixture (an Outbound Message) exactly as stored."""
    return (PLUGINS_DIR / "salesforce" / "fixtures" / name).read_bytes()


def outbound_message(name: str, notifications: int = 1, **fields: str) -> bytes:
    """Return a fixture with its one notification repeated, each copy with fresh ids.

    Fields given replace (or add) sObject values in every copy, e.g. Subject="…"; copy i
    gets notification id 04l…{i} and, after the first, record id …{i}.
    """
    text = salesforce_fixture(name).decode()
    start, end = text.index("   <Notification>"), text.index("</Notification>") + 16
    block = text[start:end]
    for field, value in fields.items():
        element = f"<sf:{field}>{value}</sf:{field}>"
        block, found = re.subn(rf"<sf:{field}>[^<]*</sf:{field}>", element, block)
        if not found:
            block = block.replace("</sObject>", f" {element}\n    </sObject>")
    notification_id = re.search(r"<Id>(\w+)</Id>", block)[1]  # type: ignore[index]
    record_id = re.search(r"<sf:Id>(\w+)</sf:Id>", block)[1]  # type: ignore[index]
    copies = []
    for i in range(notifications):
        copy = block.replace(f"<Id>{notification_id}</Id>",
                             f"<Id>{notification_id[:-8]}{i:08d}</Id>")  # fmt: skip
        if i:
            copy = copy.replace(f"<sf:Id>{record_id}</sf:Id>",
                                f"<sf:Id>{record_id[:-8]}{i:08d}</sf:Id>")  # fmt: skip
        copies.append(copy)
    return (text[:start] + "".join(copies) + text[end:]).encode()


def shopify_body(name: str, **changes: Any) -> bytes:
    """Return a Shopify fixture with some top-level fields changed."""
    payload = json.loads((PLUGINS_DIR / "shopify" / "fixtures" / name).read_bytes())
    payload.update(changes)
    return json.dumps(payload).encode()


def shopify_headers(
    body: bytes,
    topic: str,
    secret: str = SHOPIFY_SECRET,
    shop: str = SHOPIFY_SHOP,
    webhook_id: str | None = None,
) -> dict:
    """Sign a body and name its topic, shop and delivery as Shopify does."""
    return {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": shopify_sign(secret, body),
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-API-Version": "2025-10",
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
    }
