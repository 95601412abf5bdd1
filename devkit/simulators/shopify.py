"""Local simulator of a Shopify shop: orders, fulfilments, cancellations and refunds sent to
Carryover as Shopify's webhooks.

Shopify sends one JSON POST per topic a shop's app subscribed to, the body being the order
(orders/create, orders/fulfilled, orders/cancelled) or the refund (refunds/create) as the
REST API shows it, signed with X-Shopify-Hmac-Sha256 (base64 of HMAC-SHA256 over the body,
keyed with the app's client secret) and named by X-Shopify-Topic, X-Shopify-Shop-Domain,
X-Shopify-Webhook-Id (the same on a retry), X-Shopify-API-Version and
X-Shopify-Triggered-At. The payloads follow plugins/shopify/fixtures/.

    python -m devkit.simulators.shopify --carryover http://127.0.0.1:8080 --secret S \\
        --shop acme.myshopify.com order --email ann@example.com --item "Blue mug" \\
        --quantity 2 --price 19.00 --refund 19.00
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import requests

from plugins.shopify import sign

HOOK_PATH = "/hooks/shopify"
API_VERSION = "2025-10"
FIRST_ORDER_ID = 450789469  # the order of Shopify's SDK fixtures; later ones count up
FIRST_NUMBER = 1001


class RejectedWebhook(Exception):
    """Carryover answered a webhook with another status than 200."""

    def __init__(self, status_code: int, reply: str) -> None:
        super().__init__(f"Carryover answered {status_code}: {reply[:200]}")
        self.status_code = status_code


@dataclass(frozen=True)
class LineItem:
    """One line of an order: what, how many, at what unit price."""

    name: str
    quantity: int = 1
    price: Decimal = Decimal("10.00")


@dataclass
class Order:
    """An order the shop took, as the webhooks describe it."""

    id: int
    number: int
    email: str | None
    phone: str | None
    customer_id: int
    first_name: str
    last_name: str
    items: tuple[LineItem, ...]
    currency: str
    created_at: datetime
    updated_at: datetime
    financial_status: str = "paid"
    fulfillment_status: str | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    refunds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        """Return what the customer paid."""
        return sum((i.price * i.quantity for i in self.items), Decimal("0.00"))

    def payload(self) -> dict[str, Any]:
        """Return the order as Shopify's order webhooks carry it."""
        customer = {
            "id": self.customer_id, "email": self.email, "phone": self.phone,
            "first_name": self.first_name, "last_name": self.last_name,
            "admin_graphql_api_id": f"gid://shopify/Customer/{self.customer_id}",
        }  # fmt: skip
        return {
            "id": self.id,
            "admin_graphql_api_id": f"gid://shopify/Order/{self.id}",
            "name": f"#{self.number}",
            "order_number": self.number,
            "email": self.email,
            "contact_email": self.email,
            "phone": self.phone,
            "created_at": _time(self.created_at),
            "updated_at": _time(self.updated_at),
            "processed_at": _time(self.created_at),
            "cancelled_at": _time(self.cancelled_at) if self.cancelled_at else None,
            "cancel_reason": self.cancel_reason,
            "currency": self.currency,
            "total_price": str(self.total),
            "subtotal_price": str(self.total),
            "financial_status": self.financial_status,
            "fulfillment_status": self.fulfillment_status,
            "source_name": "web",
            "line_items": [
                {
                    "id": self.id * 10 + n,
                    "name": i.name,
                    "title": i.name,
                    "quantity": i.quantity,
                    "price": str(i.price),
                    "fulfillment_status": self.fulfillment_status,
                }
                for n, i in enumerate(self.items)
            ],  # fmt: skip
            "billing_address": {
                "name": f"{self.first_name} {self.last_name}",
                "phone": self.phone,
            },  # fmt: skip
            "customer": customer,
            "refunds": self.refunds,
        }


@dataclass(frozen=True)
class Delivery:
    """One webhook sent: its topic, delivery id and Carryover's reply."""

    topic: str
    webhook_id: str
    status_code: int
    reply: str


class ShopifyShop:
    """A shop that sends its order and refund webhooks to Carryover."""

    def __init__(
        self, carryover_url: str, secret: str, shop: str = "acme.myshopify.com",
        session: requests.Session | None = None,
    ) -> None:  # fmt: skip
        self.url = carryover_url.rstrip("/") + HOOK_PATH
        self.secret = secret
        self.shop = shop
        # No pooled connection by default: a kept-alive one would outlive the Carryover it
        # went to (the demo binds the same port again).
        self.session = session
        self.sent: list[Delivery] = []
        self._ids = itertools.count(FIRST_ORDER_ID)
        self._numbers = itertools.count(FIRST_NUMBER)
        self._refund_ids = itertools.count(509562969)

    def order(
        self,
        items: Sequence[LineItem],
        email: str | None = None,
        phone: str | None = None,
        name: tuple[str, str] = ("Ann", "Example"),
        currency: str = "USD",
        customer_id: int = 207119551,
    ) -> Order:
        """Take an order online and send orders/create."""
        now = datetime.now(UTC)
        order = Order(next(self._ids), next(self._numbers), email, phone, customer_id, *name,
                      tuple(items), currency, now, now)  # fmt: skip
        self.send("orders/create", order.payload())
        return order

    def fulfil(self, order: Order) -> None:
        """Ship every item of an order and send orders/fulfilled."""
        order.fulfillment_status, order.updated_at = "fulfilled", datetime.now(UTC)
        self.send("orders/fulfilled", order.payload())

    def cancel(self, order: Order, reason: str = "customer") -> None:
        """Cancel an order (refunding it) and send orders/cancelled."""
        now = datetime.now(UTC)
        order.cancelled_at, order.cancel_reason, order.updated_at = now, reason, now
        order.financial_status = "refunded"
        self.send("orders/cancelled", order.payload())

    def refund(self, order: Order, amount: Decimal, note: str | None = None) -> dict[str, Any]:
        """Give money back on an order and send refunds/create."""
        now = _time(datetime.now(UTC))
        refund = {
            "id": next(self._refund_ids), "order_id": order.id, "created_at": now,
            "processed_at": now, "note": note, "restock": False, "refund_line_items": [],
            "transactions": [
                {"id": next(self._refund_ids), "order_id": order.id, "kind": "refund",
                 "status": "success", "amount": str(amount), "currency": order.currency,
                 "gateway": "bogus", "created_at": now}
            ],
            "order_adjustments": [],
        }  # fmt: skip
        order.refunds.append(refund)
        order.financial_status = "refunded" if amount >= order.total else "partially_refunded"
        self.send("refunds/create", refund)
        return refund

    def send(self, topic: str, payload: dict[str, Any], webhook_id: str | None = None) -> Delivery:
        """Sign and POST one webhook; raise RejectedWebhook unless Carryover answers 200."""
        body = _json(payload)
        webhook_id = webhook_id or str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Hmac-Sha256": sign(self.secret, body),
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": self.shop,
            "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-API-Version": API_VERSION,
            "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
        }
        poster = self.session or requests
        response = poster.post(self.url, data=body, headers=headers, timeout=10)
        delivery = Delivery(topic, webhook_id, response.status_code, response.text)
        self.sent.append(delivery)
        if response.status_code != 200:
            raise RejectedWebhook(response.status_code, response.text)
        return delivery


def _time(moment: datetime) -> str:
    """Write a time as Shopify does: ISO-8601 with an offset, to the second."""
    return moment.replace(microsecond=0).isoformat()


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.simulators.shopify",
        description="Send Shopify order and refund webhooks to Carryover.",
    )
    parser.add_argument("--carryover", required=True, help="Carryover's base URL")
    parser.add_argument("--secret", default=os.environ.get("SHOPIFY_WEBHOOK_SECRET"),
                        help="the webhook secret (default: $SHOPIFY_WEBHOOK_SECRET)")  # fmt: skip
    parser.add_argument("--shop", default="acme.myshopify.com", help="the shop's domain")
    commands = parser.add_subparsers(dest="command", required=True)
    order = commands.add_parser("order", help="an online order, then what happens to it")
    order.add_argument("--email")
    order.add_argument("--phone")
    order.add_argument("--item", default="Blue mug")
    order.add_argument("--quantity", type=int, default=1)
    order.add_argument("--price", type=Decimal, default=Decimal("19.00"))
    order.add_argument("--currency", default="USD")
    order.add_argument("--fulfil", action="store_true", help="then ship it")
    order.add_argument("--refund", type=Decimal, help="then refund this amount")
    order.add_argument("--cancel", action="store_true", help="then cancel it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line."""
    args = _parser().parse_args(argv)
    if not args.secret:
        print("give --secret or set SHOPIFY_WEBHOOK_SECRET", file=sys.stderr)
        return 2
    shop = ShopifyShop(args.carryover, args.secret, args.shop)
    try:
        item = LineItem(args.item, args.quantity, args.price)
        placed = shop.order([item], args.email, args.phone, currency=args.currency)
        if args.fulfil:
            shop.fulfil(placed)
        if args.refund is not None:
            shop.refund(placed, args.refund)
        if args.cancel:
            shop.cancel(placed)
    except RejectedWebhook as exc:
        print(exc, file=sys.stderr)
        return 1
    for delivery in shop.sent:
        print(f"{delivery.topic} {delivery.webhook_id}: {delivery.status_code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
