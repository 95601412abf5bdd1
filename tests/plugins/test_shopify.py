"""Shopify webhooks: the signature, the shop, clear refusals, duplicates, and orders in the
timeline, the notes and the pop."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from middleware.installation import Installation, build_installation
from middleware.notes.summary import when
from middleware.store.tables import deliveries, identities, interactions, writes
from plugins.shopify import sign
from tests.payloads import fixture_bytes, shopify_body, shopify_headers
from tests.values import AGENT_KEY, SHOPIFY_SHOP

BEARER = {"Authorization": f"Bearer {AGENT_KEY}"}
ANN_EMAIL = "ann.example@example.com"
ANN_PHONE = "+14155550142"
ORDER_ID = "450789469"
ORDER_URL = f"https://{SHOPIFY_SHOP}/admin/orders/{ORDER_ID}"


@pytest.fixture
def core(database_url: str, zendesk_api_url: str, make_config) -> Iterator[Installation]:
    """Build a Carryover installation connected to Zendesk, the phone and Shopify."""
    config = make_config(database_url, zendesk_api_url, phone=True, shopify={})
    built = build_installation(config)
    yield built
    built.dispose()


def stamp(age: timedelta) -> str:
    """Return the time `age` ago as Shopify writes times (ISO-8601 with an offset)."""
    return (datetime.now(UTC) - age).replace(microsecond=0).isoformat()


def order(name: str = "orders_create.json", age: timedelta = timedelta(days=3), **changes) -> bytes:
    """Return an order fixture of Ann's, created `age` ago and changed then."""
    moment = stamp(age)
    customer = {**json.loads(shopify_body(name))["customer"], "email": ANN_EMAIL}
    fields = {"email": ANN_EMAIL, "customer": customer, "created_at": moment,
              "updated_at": moment, **changes}  # fmt: skip
    return shopify_body(name, **fields)


def refund(age: timedelta = timedelta(days=2)) -> bytes:
    """Return the refund fixture, made `age` ago."""
    return shopify_body("refunds_create.json", created_at=stamp(age), processed_at=stamp(age))


def ticket(ticket_id: str) -> bytes:
    """Return a Zendesk ticket.created event of Ann's, now, with a fresh event id."""
    payload = json.loads(fixture_bytes("ticket_created__mail.json"))
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload["id"] = str(uuid.uuid4())
    payload["time"] = moment
    payload["detail"].update(id=ticket_id, created_at=moment, updated_at=moment)
    return json.dumps(payload).encode()


def count(core: Installation, table) -> int:
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def orders(core: Installation) -> list:
    with core.engine.connect() as conn:
        query = select(interactions).where(interactions.c.kind == "order")
        return conn.execute(query.order_by(interactions.c.id)).all()


def customer_of_ticket(core: Installation, ticket_id: str) -> int:
    with core.engine.connect() as conn:
        query = select(interactions.c.customer_id).where(
            interactions.c.source == "zendesk", interactions.c.external_id == ticket_id
        )
        return conn.execute(query).scalar_one()


# -- the signature and the shop -------------------------------------------------------------


def test_signature_matches_the_vector_of_shopifys_own_sdk_tests():
    """Shopify's JS SDK validates {"foo": "bar"} under test_secret_key with this HMAC."""
    expected = "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="
    assert sign("test_secret_key", b'{"foo": "bar"}') == expected


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (sign("another secret", order()), "X-Shopify-Hmac-Sha256 does not match"),
        ("", "missing X-Shopify-Hmac-Sha256 header"),
    ],
)
def test_a_wrong_or_missing_signature_gets_401_and_nothing_is_stored(
    core, client, signature, reason
):
    """A delivery not signed with the webhook secret is refused and never stored."""
    body = order()
    headers = {**shopify_headers(body, "orders/create"), "X-Shopify-Hmac-Sha256": signature}
    response = client.post("/hooks/shopify", data=body, headers=headers)
    assert (response.status_code, response.get_json()) == (401, {"error": reason})
    assert count(core, deliveries) == 0


def test_a_delivery_from_another_shop_gets_401_and_nothing_is_stored(core, hooks):
    """A correctly signed delivery of another shop (one app, many shops) is refused."""
    response = hooks.shopify(order(), "orders/create", shop="other-shop.myshopify.com")
    assert response.status_code == 401
    assert response.get_json() == {
        "error": "X-Shopify-Shop-Domain: other-shop.myshopify.com is not the configured shop"
    }
    assert count(core, deliveries) == 0


@pytest.mark.parametrize(
    ("body", "topic", "webhook_id", "error"),
    [
        (b"{not json", "orders/create", None, "body is not valid JSON"),
        (shopify_body("orders_create.json", id="1/../2"), "orders/create", None,
         "id: expected Shopify's numeric id"),
        (shopify_body("refunds_create.json", order_id=None), "refunds/create", None,
         "order_id: expected Shopify's numeric id"),
        (shopify_body("orders_create.json", customer={"id": "x"}), "orders/create", None,
         "customer.id: expected Shopify's numeric id"),
        (order(), "orders create", None, "X-Shopify-Topic header: expected a topic"),
        (order(), "orders/create", "../../etc", "X-Shopify-Webhook-Id header: expected a UUID"),
    ],
)  # fmt: skip
def test_a_malformed_delivery_gets_400_naming_what_and_where(
    core, hooks, body, topic, webhook_id, error
):
    """Bad JSON, ids that are not Shopify's digits and bad headers are refused as 400."""
    response = hooks.shopify(body, topic, webhook_id=webhook_id)
    assert response.status_code == 400
    assert error in response.get_json()["error"]
    assert count(core, interactions) == 0


def test_an_unused_topic_gets_200_ignored(core, hooks, worker):
    """A topic Carryover does not use (products/update) is acknowledged and changes nothing."""
    body = shopify_body("products_update.json")
    response = hooks.shopify(body, "products/update")
    assert (response.status_code, response.get_json()) == (200, {"ignored": "products/update"})
    worker.drain()
    assert count(core, interactions) == 0


def test_a_retried_delivery_causes_nothing_new(core, hooks, worker):
    """The same X-Shopify-Webhook-Id twice is one delivery and one order."""
    webhook_id = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    body = order()
    first = hooks.shopify(body, "orders/create", webhook_id=webhook_id)
    again = hooks.shopify(body, "orders/create", webhook_id=webhook_id)
    worker.drain()
    assert (first.status_code, again.status_code) == (200, 200)
    assert (count(core, deliveries), len(orders(core))) == (1, 1)


# -- orders in the timeline --------------------------------------------------------------------


def test_an_order_joins_the_zendesk_customer_by_email(core, hooks, worker, fake_zendesk):
    """An order by Ann's email is a timeline item of Ann's: number, total, items, status, link."""
    hooks.zendesk(ticket("5141"))
    worker.drain()
    hooks.shopify(order(), "orders/create")
    worker.drain()
    [row] = orders(core)
    assert (row.source, row.external_id, row.kind, row.channel, row.status, row.number,
            row.subject, row.link, row.customer_name, row.text, row.customer_id) == (
        "shopify", ORDER_ID, "order", "web", "paid", "#1001",
        "2× IPod Nano - 8gb - green · 409.94 USD", ORDER_URL, "Bob Norman", None,
        customer_of_ticket(core, "5141"),
    )  # fmt: skip
    with core.engine.connect() as conn:
        query = select(identities.c.value).where(
            identities.c.customer_id == row.customer_id, identities.c.type == "shopify_customer"
        )
        assert conn.execute(query).scalars().all() == ["207119551"]


def test_refunds_and_cancellation_update_the_order(core, hooks, worker):
    """A refund marks the order refunded with its amount; a cancellation says why."""
    hooks.shopify(order(age=timedelta(days=3)), "orders/create")
    worker.drain()
    hooks.shopify(refund(timedelta(days=2)), "refunds/create")
    worker.drain()
    [row] = orders(core)
    assert (row.status, row.text) == ("refunded", "refund of 209.00 USD")
    cancelled = order(
        "orders_cancelled.json", age=timedelta(days=3), updated_at=stamp(timedelta(1))
    )
    hooks.shopify(cancelled, "orders/cancelled")
    worker.drain()
    [row] = orders(core)
    assert (row.status, row.text) == ("cancelled", "cancelled: the customer changed their mind")


def test_a_refund_before_its_order_loses_nothing(core, hooks, worker):
    """A refund that overtakes its order is kept; the order then fills in and stays refunded."""
    assert hooks.shopify(refund(timedelta(days=2)), "refunds/create").status_code == 200
    worker.drain()
    [row] = orders(core)
    assert (row.status, row.text, row.number, row.customer_id) == (
        "refunded", "refund of 209.00 USD", None, None,
    )  # fmt: skip
    created = stamp(timedelta(days=3))
    hooks.shopify(order(created_at=created, updated_at=created), "orders/create")
    worker.drain()
    [row] = orders(core)
    assert (row.status, row.text, row.number, row.subject, row.channel) == (
        "refunded", "refund of 209.00 USD", "#1001", "2× IPod Nano - 8gb - green · 409.94 USD",
        "web",
    )  # fmt: skip
    assert row.customer_id is not None
    assert row.occurred_at == datetime.fromisoformat(created).replace(tzinfo=None)


def test_a_new_order_writes_no_note(core, hooks, worker, fake_zendesk):
    """An order is not a ticket: it queues no summary and no update note on open tickets."""
    hooks.zendesk(ticket("5141"))
    worker.drain()
    notes_before = count(core, writes)
    hooks.shopify(order(), "orders/create")
    hooks.shopify(refund(), "refunds/create")
    worker.drain()
    assert count(core, writes) == notes_before


def test_the_note_on_a_new_ticket_names_the_order_and_its_refund(core, hooks, worker, fake_zendesk):
    """A ticket after a refunded order gets a note with the problem and the recent order."""
    hooks.shopify(order(age=timedelta(days=3)), "orders/create")
    hooks.shopify(refund(timedelta(days=2)), "refunds/create")
    worker.drain()
    hooks.zendesk(ticket("5158"))
    worker.drain()
    [note] = fake_zendesk.notes(5158)
    now, utc = datetime.now(UTC), ZoneInfo("UTC")
    refunded = when(stamp(timedelta(days=2)), utc, now)
    placed = when(stamp(timedelta(days=3)), utc, now)
    assert "(2 days ago)" in refunded
    assert (
        f"Order problems:\n- #1001: refund of 209.00 USD, {refunded} · {ORDER_URL}\n"
        in note["body"]
    )
    assert (
        f"Recent orders:\n- {placed} · #1001 · refunded · 2× IPod Nano - 8gb - green · "
        f"409.94 USD · {ORDER_URL}\n"
    ) in note["body"]


def test_the_pop_and_the_context_show_the_order(core, client, hooks, worker, fake_zendesk):
    """The caller's pop lists the order linked to the admin, and the context API has it."""
    hooks.zendesk(ticket("5141"))
    hooks.shopify(order(age=timedelta(days=3)), "orders/create")
    hooks.shopify(refund(timedelta(days=2)), "refunds/create")
    worker.drain()
    page = client.get(f"/pop?phone={quote(ANN_PHONE)}", headers=BEARER).get_data(as_text=True)
    link = f'<a href="{ORDER_URL}" target="_blank" rel="noopener">#1001</a>'
    assert f"{link} · refunded · 2× IPod Nano - 8gb - green · 409.94 USD</li>" in page
    assert f"{link}: refund of 209.00 USD, " in page
    context = client.get("/api/v1/context?shopify_customer=207119551", headers=BEARER).get_json()
    assert [(o["number"], o["status"], o["problem"], o["link"]) for o in context["orders"]] == [
        ("#1001", "refunded", "refund of 209.00 USD", ORDER_URL)
    ]
    assert [o["number"] for o in context["order_problems"]] == ["#1001"]
    assert [i["kind"] for i in context["interactions"]] == ["ticket"]
    assert context["open_items"][0]["kind"] == "ticket"


def test_the_admin_customer_page_lists_the_order(core, admin_client, hooks, worker):
    """The admin sees the customer's order, linked to the shop's admin, with its refund."""
    hooks.shopify(order(age=timedelta(days=3)), "orders/create")
    hooks.shopify(refund(timedelta(days=2)), "refunds/create")
    worker.drain()
    [row] = orders(core)
    page = admin_client.get(f"/admin/customers/{row.customer_id}").get_data(as_text=True)
    link = f'<a href="{ORDER_URL}" target="_blank" rel="noopener">#1001</a>'
    refunded = f"{row.updated_at:%Y-%m-%d %H:%M} UTC"
    assert f"<td>{link}</td>" in page
    assert f"<td>refunded: refund of 209.00 USD, {refunded}</td>" in page
    assert "<td>2× IPod Nano - 8gb - green · 409.94 USD</td>" in page
