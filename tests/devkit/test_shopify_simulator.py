"""The Shopify simulator: a shop whose signed order and refund webhooks Carryover accepts."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from devkit.simulators.shopify import LineItem, RejectedWebhook, ShopifyShop, main
from middleware.installation import Installation, build_installation
from middleware.store.tables import deliveries, interactions
from tests.values import SHOPIFY_SECRET, SHOPIFY_SHOP


@pytest.fixture
def core(database_url: str, zendesk_api_url: str, make_config) -> Iterator[Installation]:
    """Build a Carryover installation connected to Zendesk, the phone and Shopify."""
    built = build_installation(make_config(database_url, zendesk_api_url, shopify={}))
    yield built
    built.dispose()


@pytest.fixture
def shop(carryover_url: str) -> ShopifyShop:
    """Return the simulated test shop, sending to the served test installation."""
    return ShopifyShop(carryover_url, SHOPIFY_SECRET, SHOPIFY_SHOP)


def orders(core: Installation) -> list:
    with core.engine.connect() as conn:
        return conn.execute(select(interactions).where(interactions.c.kind == "order")).all()


def delivery_count(core: Installation) -> int:
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(deliveries)).scalar() or 0)


def test_an_online_order_and_its_refund_reach_the_timeline(core, shop, worker):
    """An order of two mugs and a refund of one become one refunded order of 38.00 EUR."""
    placed = shop.order([LineItem("Blue mug", 2, Decimal("19.00"))],
                        email="ann.example@example.com", currency="EUR")  # fmt: skip
    shop.refund(placed, Decimal("19.00"))
    worker.drain()
    assert [(d.topic, d.status_code) for d in shop.sent] == [
        ("orders/create", 200), ("refunds/create", 200),
    ]  # fmt: skip
    [row] = orders(core)
    assert (row.external_id, row.number, row.status, row.subject, row.text) == (
        "450789469", "#1001", "refunded", "2× Blue mug · 38.00 EUR", "refund of 19.00 EUR",
    )  # fmt: skip


def test_fulfilment_and_cancellation_update_the_order(core, shop, worker):
    """Shipping and then cancelling an order leaves it cancelled, saying why."""
    placed = shop.order([LineItem("Tea")], email="bob@example.com")
    shop.fulfil(placed)
    worker.drain()
    assert orders(core)[0].status == "fulfilled"
    shop.cancel(placed, "inventory")
    worker.drain()
    [row] = orders(core)
    assert (row.status, row.text) == ("cancelled", "cancelled: items out of stock")


def test_a_retried_webhook_changes_nothing(core, shop, worker):
    """The same webhook id sent twice is one delivery, as Shopify's retries are."""
    placed = shop.order([LineItem("Tea")], email="bob@example.com")
    shop.send("orders/create", placed.payload(), webhook_id=shop.sent[0].webhook_id)
    worker.drain()
    assert (delivery_count(core), len(orders(core))) == (1, 1)


def test_a_shop_with_the_wrong_secret_is_refused(core, carryover_url):
    """Carryover refuses webhooks signed with another secret, and the simulator says so."""
    shop = ShopifyShop(carryover_url, "not the secret", SHOPIFY_SHOP)
    with pytest.raises(RejectedWebhook) as refused:
        shop.order([LineItem("Tea")], email="bob@example.com")
    assert refused.value.status_code == 401
    assert delivery_count(core) == 0


def test_the_command_line_places_and_refunds_an_order(core, carryover_url, worker, capsys):
    """`order --refund` sends orders/create and refunds/create and prints each reply."""
    sender = ["--carryover", carryover_url, "--secret", SHOPIFY_SECRET, "--shop", SHOPIFY_SHOP]
    code = main([*sender, "order", "--email", "bob@example.com", "--refund", "19.00"])
    worker.drain()
    printed = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line.split(" ")[0] for line in printed] == ["orders/create", "refunds/create"]
    assert all(line.endswith(": 200") for line in printed)
    assert (orders(core)[0].status, orders(core)[0].text) == ("refunded", "refund of 19.00 USD")
