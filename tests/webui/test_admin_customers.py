"""Customers in the admin UI: search, profile, split, merge, preferred channels, erase."""

from __future__ import annotations

from sqlalchemy import func, select

from middleware.store.tables import (
    customers,
    deliveries,
    delivery_customers,
    identities,
    interactions,
    writes,
)
from tests.actions import AdminActions, Hooks
from tests.payloads import fixture_bytes, twilio_fields
from tests.values import AGENT_KEY

ANN_PHONE = "+14155550142"
AUTH = {"Authorization": f"Bearer {AGENT_KEY}"}


def ann_with_two_tickets(client, worker) -> int:
    """Let Ann write twice (the second ticket gets a note); return her customer id."""
    Hooks(client).zendesk(fixture_bytes("ticket_created__mail.json"))
    Hooks(client).zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()
    return context(client, email="ann.example@example.com")["customer"]["id"]


def context(client, **query) -> dict:
    return client.get("/api/v1/context", query_string=query, headers=AUTH).get_json()


def post_form(client, path: str, page: str, **form) -> object:
    """POST a form of the admin UI with the CSRF token of the page it is on."""
    token = AdminActions.csrf(client.get(page).data)
    return client.post(path, data={"csrf_token": token, **form})


def count(core, table, *where) -> int:
    with core.engine.connect() as conn:
        query = select(func.count()).select_from(table)
        return int(conn.execute(query.where(*where) if where else query).scalar() or 0)


def test_customers_are_found_by_email_phone_and_name(admin_client, worker, fake_zendesk):
    """Search takes an email in any case, a phone in any format, or part of a name."""
    ann = ann_with_two_tickets(admin_client, worker)
    found_by = ("ANN.Example@example.com", "(415) 555-0142", "ann exa", "8447388090501",
                "555-0142", "001 415 555 0142", "011 1 415 555 0142",
                "+1 415.555.0142")  # fmt: skip
    for q in found_by:
        page = admin_client.get("/admin/customers/", query_string={"q": q}).data.decode()
        assert f'/admin/customers/{ann}"' in page, q
    for q in ("nobody@example.com", "555-0199", "0142-555"):
        none = admin_client.get("/admin/customers/", query_string={"q": q}).data.decode()
        assert "No customer matches." in none, q


def test_a_search_longer_than_anything_stored_finds_nothing(admin_client, worker, fake_zendesk):
    """A search text of 70,000 characters is answered "no match", not a 500 (SQLite LIKE)."""
    ann_with_two_tickets(admin_client, worker)
    page = admin_client.get("/admin/customers/", query_string={"q": "x" * 70_000})
    assert page.status_code == 200
    assert "No customer matches." in page.data.decode()


def test_the_profile_shows_each_identity_with_the_record_that_linked_it(
    admin_client, worker, fake_zendesk
):
    """Identities are listed with what linked them; the timeline shows both tickets."""
    ann = ann_with_two_tickets(admin_client, worker)
    page = admin_client.get(f"/admin/customers/{ann}").data.decode()
    assert "ann.example@example.com" in page and "zendesk:ticket:5141" in page
    assert "zendesk ticket 5149" in page and "Charged twice for my January invoice" in page


def test_the_profile_tells_contact_times_in_the_installations_zone(
    admin_client, core, worker, fake_zendesk
):
    """Each contact's time reads as the admin's clock does, never as raw ISO 8601 UTC."""
    ann = ann_with_two_tickets(admin_client, worker)
    with core.engine.connect() as conn:
        query = select(interactions.c.occurred_at).where(interactions.c.customer_id == ann)
        stored = conn.execute(query.order_by(interactions.c.id)).scalars().all()
    page = admin_client.get(f"/admin/customers/{ann}").data.decode()
    for moment in stored:
        assert f"<td>{moment:%Y-%m-%d %H:%M} UTC</td>" in page  # the test installation's zone
        assert moment.isoformat() not in page


def test_splitting_a_phone_off_gives_its_calls_to_a_new_customer_kept_apart(
    admin_client, worker, core, hooks, fake_zendesk
):
    """A split phone belongs to a new customer, and Ann's next ticket does not join them again."""
    ann = ann_with_two_tickets(admin_client, worker)
    with core.engine.connect() as conn:
        phone_id = conn.execute(select(identities.c.id).where(
            identities.c.customer_id == ann, identities.c.value == ANN_PHONE)).scalar()  # fmt: skip
    split_path = f"/admin/customers/{ann}/identities/{phone_id}/split"
    assert f'href="{split_path}"' in admin_client.get(f"/admin/customers/{ann}").data.decode()
    question = admin_client.get(split_path).data.decode()
    assert f"Split {ANN_PHONE} off Ann Example?" in question
    unasked = post_form(admin_client, split_path, f"/admin/customers/{ann}")
    assert unasked.status_code == 302 and unasked.headers["Location"].endswith(split_path)
    assert context(admin_client, phone=ANN_PHONE)["customer"]["id"] == ann  # not split yet
    response = post_form(admin_client, split_path, split_path, confirmed="yes")
    assert response.status_code == 302
    caller = context(admin_client, phone=ANN_PHONE)["customer"]
    assert caller is not None and caller["id"] != ann
    assert [i["value"] for i in caller["identities"]] == [ANN_PHONE]

    # Ann's next ticket carries the phone again: the two stay apart (the line is now shared).
    hooks.zendesk(fixture_bytes("ticket_created.json").replace(
        b'"requester_id":"8447388090494"', b'"requester_id":"8447388090501"'))  # fmt: skip
    worker.drain()
    assert context(admin_client, email="ann.example@example.com")["customer"]["id"] == ann
    shared = context(admin_client, phone=ANN_PHONE)
    assert shared["customer"] is None
    assert {c["id"] for c in shared["candidates"]} == {ann, caller["id"]}
    assert "kept apart from" in admin_client.get(f"/admin/customers/{ann}").data.decode()


def test_the_only_identity_cannot_be_split_off(admin_client, core, hooks):
    """A customer with one identity has nothing to split: back to the profile with the reason."""
    hooks.twilio(twilio_fields("call_started__ringing.form"))
    from middleware.process.worker import Worker

    Worker(core, name="w").drain()
    with core.engine.connect() as conn:
        row = conn.execute(select(identities)).one()
    profile = f"/admin/customers/{row.customer_id}"
    response = post_form(admin_client, f"{profile}/identities/{row.id}/split", profile,
                         confirmed="yes")  # fmt: skip
    assert response.status_code == 302 and response.headers["Location"].endswith(profile)
    assert "Not split: this is the customer&#39;s only identity" in (
        admin_client.get(profile).data.decode()
    )


def test_merging_folds_one_customer_into_another(admin_client, worker, core, hooks, fake_zendesk):
    """A caller from an unknown number, merged into Ann, brings the call into her timeline."""
    ann = ann_with_two_tickets(admin_client, worker)
    hooks.twilio(twilio_fields("call_started__ringing.form", From="+14155550199"))
    worker.drain()
    caller = context(admin_client, phone="+14155550199")["customer"]["id"]
    question = admin_client.get(f"/admin/customers/{ann}/merge?other={caller}").data.decode()
    assert f"Merge customer #{caller} into Ann Example?" in question
    assert "ann.example@example.com" in question and "+14155550199" in question  # both shown
    unasked = post_form(admin_client, f"/admin/customers/{ann}/merge",
                        f"/admin/customers/{ann}", other=str(caller))  # fmt: skip
    assert unasked.status_code == 302
    assert unasked.headers["Location"].endswith(f"/admin/customers/{ann}/merge?other={caller}")
    assert context(admin_client, phone="+14155550199")["customer"]["id"] == caller
    response = post_form(admin_client, f"/admin/customers/{ann}/merge",
                         f"/admin/customers/{ann}", other=str(caller), confirmed="yes")  # fmt: skip
    assert response.status_code == 302
    merged = context(admin_client, phone="+14155550199")
    assert merged["customer"]["id"] == ann
    assert any(i["kind"] == "call" for i in merged["interactions"])
    old = admin_client.get(f"/admin/customers/{caller}")
    assert old.status_code == 302 and old.headers["Location"].endswith(f"/admin/customers/{ann}")
    again = post_form(admin_client, f"/admin/customers/{ann}/merge", f"/admin/customers/{ann}",
                      other=str(caller), confirmed="yes")  # fmt: skip
    assert again.status_code == 302 and again.headers["Location"].endswith(f"/customers/{ann}")
    assert "Not merged:" in admin_client.get(f"/admin/customers/{ann}").data.decode()


def test_merging_into_a_number_that_cannot_be_a_customer_goes_back_saying_so(
    admin_client, worker, fake_zendesk
):
    """A typed number in another script (²), past 64 bits or unknown is refused, not a 500."""
    ann = ann_with_two_tickets(admin_client, worker)
    profile = f"/admin/customers/{ann}"
    for other in ("²", "٣", str(2**63), "9" * 5000, "0", "-1", ""):
        asked = admin_client.get(f"{profile}/merge", query_string={"other": other})
        assert asked.status_code == 302 and asked.headers["Location"].endswith(profile), other
        assert "Give the number of the customer" in admin_client.get(profile).data.decode()
        posted = post_form(admin_client, f"{profile}/merge", profile, other=other,
                           confirmed="yes")  # fmt: skip
        assert posted.status_code == 302 and posted.headers["Location"].endswith(profile), other
        assert "Give the number of the customer" in admin_client.get(profile).data.decode()
    unknown = admin_client.get(f"{profile}/merge", query_string={"other": "999999"})
    assert unknown.status_code == 302
    assert "There is no customer 999999." in admin_client.get(profile).data.decode()
    itself = admin_client.get(f"{profile}/merge", query_string={"other": str(ann)})
    assert itself.status_code == 302
    assert "is this customer already" in admin_client.get(profile).data.decode()


def test_preferred_channels_are_what_the_customer_said(admin_client, worker, admin, fake_zendesk):
    """Ticked channels replace the most-used ones in the context; unknown channels are refused."""
    ann = ann_with_two_tickets(admin_client, worker)
    page = f"/admin/customers/{ann}"
    path = f"/admin/customers/{ann}/preferred-channels"
    token = admin.csrf(admin_client.get(page).data)
    response = admin_client.post(path, data={"csrf_token": token, "channel": ["whatsapp", "sms"]})
    assert response.status_code == 302
    assert context(admin_client, email="ann.example@example.com")["customer"][
        "preferred_channels"] == ["whatsapp", "sms"]  # fmt: skip
    refused = post_form(admin_client, path, page, channel="pigeon")
    assert refused.status_code == 302 and refused.headers["Location"].endswith(page)
    assert "Not saved:" in admin_client.get(page).data.decode()


def test_erasing_a_customer_deletes_every_row_about_them_and_nothing_else(
    admin_client, worker, core, hooks, fake_zendesk
):
    """Identities, timeline, notes and the raw webhooks go; another customer's rows stay."""
    ann = ann_with_two_tickets(admin_client, worker)
    hooks.twilio(twilio_fields("call_started__ringing.form", From="+14155550199"))
    worker.drain()
    other = context(admin_client, phone="+14155550199")["customer"]["id"]
    assert count(core, writes) == 1 and count(core, deliveries) == 3

    page = f"/admin/customers/{ann}/erase"
    assert f'href="{page}"' in admin_client.get(f"/admin/customers/{ann}").data.decode()
    question = admin_client.get(page).data.decode()
    assert "Erase Ann Example?" in question and "ann.example@example.com" in question
    wrong = post_form(admin_client, f"/admin/customers/{ann}/erase", page, confirm="1234")
    assert wrong.status_code == 302 and wrong.headers["Location"].endswith(page)
    assert count(core, customers, customers.c.id == ann) == 1
    assert f"Type the customer&#39;s number ({ann})" in admin_client.get(page).data.decode()
    response = post_form(admin_client, f"/admin/customers/{ann}/erase", page, confirm=str(ann))
    assert response.status_code == 302
    assert "is erased" in admin_client.get(response.headers["Location"]).data.decode()

    assert count(core, customers, customers.c.id == ann) == 0
    assert count(core, identities, identities.c.customer_id == ann) == 0
    assert count(core, interactions, interactions.c.customer_id == ann) == 0
    assert count(core, writes) == 0
    assert count(core, delivery_customers, delivery_customers.c.customer_id == ann) == 0
    assert count(core, deliveries) == 1  # the call's webhook, about the other customer
    with core.engine.connect() as conn:
        body = bytes(conn.execute(select(deliveries.c.body)).scalar())
    assert b"ann.example" not in body and b"Charged twice" not in body
    assert context(admin_client, phone="+14155550199")["customer"]["id"] == other
    assert admin_client.get(f"/admin/customers/{ann}").status_code == 404


def test_customer_changes_need_the_csrf_token(admin_client, worker, core, fake_zendesk):
    """A forged erase (no token) is refused and erases nothing."""
    ann = ann_with_two_tickets(admin_client, worker)
    response = admin_client.post(f"/admin/customers/{ann}/erase", data={"confirm": str(ann)})
    assert response.status_code == 400
    assert count(core, customers, customers.c.id == ann) == 1
