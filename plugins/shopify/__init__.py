"""Shopify: order and refund webhooks in, so that purchases join the customer's timeline.

Shopify signs each delivery with X-Shopify-Hmac-Sha256 (base64 of HMAC-SHA256 over the raw
body, keyed with the app's client secret or the store's webhook signing key), names the shop
in X-Shopify-Shop-Domain, the topic in X-Shopify-Topic ("orders/create") and the delivery in
X-Shopify-Webhook-Id, which stays the same when Shopify retries. Event types are the topics
with a dot ("orders.create"), as the fixtures are named.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from middleware.config import Config, ConfigError, Setting
from middleware.errors import InvalidSignature, MalformedPayload, UnsupportedEvent
from middleware.integrations.plugin import (
    Capability,
    IdentityType,
    InboundEvent,
    InboundRequest,
    Plugin,
    decode_json_object,
)

# Orders, customers, refunds: 64-bit integers in the REST payloads.
SHOPIFY_ID = re.compile(r"^[0-9]{1,20}$")
# X-Shopify-Webhook-Id is a UUID; Shopify's own SDK tests use plain digits. It goes into the
# dedupe key, so only these characters and this length are taken.
WEBHOOK_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# A topic as Shopify names one ("orders/create", "app/uninstalled"): it is echoed in the reply.
TOPIC = re.compile(r"^[a-z_]{1,40}/[a-z_]{1,40}$")
# A shop's domain as X-Shopify-Shop-Domain carries it ("acme.myshopify.com").
SHOP_DOMAIN = re.compile(r"^[A-Za-z0-9.-]{1,255}$")
# Money as Shopify writes it: a decimal string ("409.94"), and a currency code ("USD").
AMOUNT = re.compile(r"^-?[0-9]{1,15}(\.[0-9]{1,6})?$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
TOPICS = {
    "orders/create": "orders.create",
    "orders/fulfilled": "orders.fulfilled",
    "orders/cancelled": "orders.cancelled",
    "refunds/create": "refunds.create",
}
ITEMS_SHOWN = 3  # "2× Mug, Tea, Spoon and 4 more"
MAX_ITEM_NAME = 80

SETUP = """\
1. Set shop_url below to your shop's admin address, https://<shop>.myshopify.com (the
   myshopify.com name, even when the shop has a domain of its own: Shopify names the shop
   that way in every delivery, and order links open there).
2. Subscribe to the topics orders/create, orders/fulfilled, orders/cancelled and
   refunds/create, format JSON, URL {public_url}/hooks/shopify:
   - a custom app in the Dev Dashboard or Partner Dashboard: in the app's configuration
     (webhooks subscriptions), or with the webhookSubscriptionCreate mutation; Shopify signs
     with the app's client secret (Dev Dashboard → the app → Settings → Client secret);
   - or, without an app: Shopify admin → Settings → Notifications → Webhooks → Create
     webhook, once per topic; Shopify signs these with the key shown on that page ("Your
     webhooks will be signed with …").
3. Copy that secret into webhook_secret below (or integrations.shopify.webhook_secret in the
   configuration file).
4. Orders join customers by email and phone: a ticket or call from the same customer then
   shows their recent orders and any refund or cancellation of the last 30 days.
"""


def normalise_customer(value: str) -> str | None:
    """Return a Shopify customer id, or None for anything else."""
    value = value.strip()
    if not SHOPIFY_ID.fullmatch(value) or not value.strip("0"):
        return None
    return value


class ShopifyPlugin(Plugin):
    """Receive Shopify order and refund webhooks."""

    key = "shopify"
    title = "Shopify"
    capabilities = frozenset({Capability.RECEIVE})
    identity_types = (
        IdentityType("shopify_customer", normalise_customer, system_id=True, lookup=True),
    )
    # Order, customer, line item and transaction ids have 9 to 13 digits: never card numbers.
    id_fields = ("id", "*_id")
    id_formats = {"order": SHOPIFY_ID, "customer": SHOPIFY_ID, "webhook": WEBHOOK_ID}
    settings = {
        "shop_url": Setting(str, required=True, doc="https://<shop>.myshopify.com"),
        "webhook_secret": Setting(
            str, required=True, secret=True,
            doc="the app's client secret, or the key shown under Settings → Notifications",
        ),
    }  # fmt: skip
    event_types = tuple(TOPICS.values())
    setup_doc = SETUP
    refusal_hints = {
        "signature": "check webhook_secret is the client secret of the app that subscribed "
        "(or the key shown under Settings > Notifications > Webhooks for admin-made ones); "
        "an app's subscriptions are not signed with that key, nor the admin's with the app's",
        "missing-signature": "Shopify signs every webhook: is something else posting to this "
        "URL, or does a proxy in front drop X-Shopify-Hmac-Sha256?",
        "account": "check shop_url is this shop's https://<shop>.myshopify.com address: the "
        "delivery came from another shop",
    }

    def __init__(self, settings: Mapping[str, Any], config: Config) -> None:
        super().__init__(settings, config)
        self.shop_url = self.upstream_url("shop_url").rstrip("/")
        host = urlsplit(self.shop_url).hostname
        if not host:
            raise ConfigError(
                "integrations.shopify.shop_url: expected https://<shop>.myshopify.com"
            )
        self.shop_domain = host.lower()

    @classmethod
    def fixture_headers(cls, path: Path) -> dict[str, str]:
        """Name a fixture's topic by its file name (orders_create.json: orders/create)."""
        return {
            "x-shopify-topic": path.stem.split("__")[0].replace("_", "/", 1),
            "x-shopify-webhook-id": "fixture-" + re.sub(r"[^A-Za-z0-9]+", "-", path.stem),
        }

    # -- naming records for agents ---------------------------------------------------------
    @classmethod
    def record_label(cls, item: Mapping[str, Any]) -> str:
        """Name an order as the shop does: "#1001"."""
        if item.get("kind") == "order" and item.get("number"):
            return str(item["number"])
        return super().record_label(item)

    @classmethod
    def record_url(cls, item: Mapping[str, Any], settings: Mapping[str, Any]) -> str | None:
        """Link an order in the Shopify admin: <shop_url>/admin/orders/450789469."""
        order = str(item.get("external_id") or "")
        base = str(settings.get("shop_url") or "").rstrip("/")
        if item.get("kind") != "order" or not SHOPIFY_ID.fullmatch(order) or not base:
            return None
        return f"{base}/admin/orders/{order}"

    # -- receiving -------------------------------------------------------------------------
    def verify(self, request: InboundRequest) -> str:
        """Check X-Shopify-Hmac-Sha256 over the raw body, and that the shop is ours."""
        given = request.headers.get("x-shopify-hmac-sha256", "").strip()
        if not given:
            raise InvalidSignature("missing X-Shopify-Hmac-Sha256 header", "missing-signature")
        expected = sign(self.options["webhook_secret"], request.body)
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise InvalidSignature("X-Shopify-Hmac-Sha256 does not match")
        # A key shared by several shops (one app's client secret) signs them all: only
        # deliveries from the configured shop are this installation's.
        shop = request.headers.get("x-shopify-shop-domain", "").strip().lower()
        if not hmac.compare_digest(shop.encode(), self.shop_domain.encode()):
            shown = shop[:80] if SHOP_DOMAIN.fullmatch(shop) else "no valid shop"
            raise InvalidSignature(
                f"X-Shopify-Shop-Domain: {shown} is not the configured shop", "account"
            )
        return "signature"

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        """Read one order or refund, named by X-Shopify-Topic and X-Shopify-Webhook-Id."""
        topic = request.headers.get("x-shopify-topic", "").strip()
        if not TOPIC.fullmatch(topic):
            raise MalformedPayload("X-Shopify-Topic header: expected a topic such as orders/create")
        if topic not in TOPICS:
            raise UnsupportedEvent(topic)
        payload = decode_json_object(request.body)
        webhook_id = request.headers.get("x-shopify-webhook-id", "").strip()
        if not WEBHOOK_ID.fullmatch(webhook_id):
            raise MalformedPayload("X-Shopify-Webhook-Id header: expected a UUID")
        payload = _refund(payload) if topic == "refunds/create" else _order(payload)
        order_id = payload.get("order_id", payload["id"])
        payload["admin_url"] = f"{self.shop_url}/admin/orders/{order_id}"
        return [InboundEvent(key=f"shopify:{webhook_id}", type=TOPICS[topic], payload=payload)]


def sign(secret: str, body: bytes) -> str:
    """Return X-Shopify-Hmac-Sha256 of a body: base64 of HMAC-SHA256 keyed with the secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _id(payload: Mapping[str, Any], name: str, where: str) -> str:
    """Return an id field as text; refuse anything but Shopify's digits."""
    value = payload.get(name)
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not SHOPIFY_ID.fullmatch(text):
        raise MalformedPayload(f"{where}{name}: expected Shopify's numeric id")
    return text


def _order(payload: dict[str, Any]) -> dict[str, Any]:
    """Check an order's ids and add what agents glance at: its items and its total."""
    order = {**payload, "id": _id(payload, "id", "")}
    customer = payload.get("customer")
    if isinstance(customer, dict) and customer.get("id") is not None:
        order["customer"] = {**customer, "id": _id(customer, "id", "customer.")}
    order["items_line"] = items_line(payload.get("line_items"))
    order["total"] = money(payload.get("total_price"), payload.get("currency"))
    return order


def _refund(payload: dict[str, Any]) -> dict[str, Any]:
    """Check a refund's ids and add the amount given back (its successful refund transactions)."""
    refund = {**payload, "id": _id(payload, "id", ""), "order_id": _id(payload, "order_id", "")}
    refund["amount"] = refunded_amount(payload.get("transactions"))
    return refund


def items_line(line_items: Any) -> str | None:
    """Say what an order holds in one line: "2× IPod Nano - 8gb - green, Tea and 3 more"."""
    if not isinstance(line_items, list):
        return None
    names = []
    for item in line_items:
        if not isinstance(item, dict):
            continue
        name = item.get("name") or item.get("title")
        if not isinstance(name, str) or not name.strip():
            continue
        name = " ".join(name.split())[:MAX_ITEM_NAME]
        quantity = item.get("quantity")
        many = isinstance(quantity, int) and not isinstance(quantity, bool) and quantity > 1
        names.append(f"{quantity}× {name}" if many else name)
    if not names:
        return None
    shown = ", ".join(names[:ITEMS_SHOWN])
    rest = len(names) - ITEMS_SHOWN
    return f"{shown} and {rest} more" if rest > 0 else shown


def money(amount: Any, currency: Any) -> str | None:
    """Say an amount with its currency ("409.94 USD"), or None for anything malformed."""
    if isinstance(amount, int | float) and not isinstance(amount, bool):
        amount = str(amount)
    if not isinstance(amount, str) or not AMOUNT.fullmatch(amount):
        return None
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        return amount
    return f"{amount} {currency}"


def refunded_amount(transactions: Any) -> str | None:
    """Add up the successful refund transactions of a refund ("209.00 USD"), None if none."""
    if not isinstance(transactions, list):
        return None
    total, currencies = Decimal(0), set()
    for t in transactions:
        if not isinstance(t, dict) or t.get("kind") != "refund" or t.get("status") != "success":
            continue
        amount = t.get("amount")
        if not isinstance(amount, str) or not AMOUNT.fullmatch(amount):
            continue
        try:
            total += Decimal(amount)
        except InvalidOperation:
            continue
        currencies.add(t.get("currency"))
    if not currencies:
        return None
    currency = currencies.pop() if len(currencies) == 1 else None
    return money(str(total), currency)
