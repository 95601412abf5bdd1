"""Identity resolution: which customer a record belongs to."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, Row, event, select

from middleware.customers import identity
from middleware.customers.identity import (
    IdentityTypes,
    Resolution,
    find_holders,
    normalise_email,
    normalise_phone,
    resolve_customer,
)
from middleware.customers.timeline import append
from middleware.integrations.registry import PluginRegistry
from middleware.interaction import Identity, Interaction
from middleware.store.tables import customers, identities, interactions, make_engine, merges
from plugins.salesforce.ids import salesforce_id18
from tests.payloads import fixture_bytes, zendesk_event
from tests.values import AGENT_KEY, ANN

REGION = "US"
WHEN = datetime(2025, 1, 8, 9, 30)
CHANNELS = {"ticket": "email", "case": "email", "call": "phone", "message": "sms"}
LINE = "+14155550199"  # one number written in E.164; records below write it in other ways
SF_15 = "003D000000QYzZk"
SF_18 = "003D000000QYzZkIAL"
AUTH = {"Authorization": f"Bearer {AGENT_KEY}"}
# The identity types of an installation with every installed plugin.
TYPES = IdentityTypes(PluginRegistry.from_entry_points().identity_types())


def email(value: str) -> Identity:
    """Return an email identity as a record carries it."""
    return Identity("email", value)


def phone(value: str) -> Identity:
    """Return a phone identity as a record carries it."""
    return Identity("phone", value)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """Connect to an empty, migrated store."""
    built = make_engine(database_url)
    yield built
    built.dispose()


def receive(
    engine: Engine, kind: str, external_id: str, *found: Identity, name: str | None = None
) -> Resolution:
    """Resolve and append one canonical interaction in one transaction, as the pipeline does."""
    interaction = Interaction(
        source="test",
        external_id=external_id,
        kind=kind,
        channel=CHANNELS[kind],
        occurred_at=WHEN,
        updated_at=WHEN,
        record_ref=f"test:{kind}:{external_id}",
        identities=TYPES.normalise_all(found, REGION),
        customer_name=name,
    )
    with engine.begin() as conn:
        resolution = (
            resolve_customer(
                conn, interaction.identities, interaction.record_ref, name, types=TYPES
            )
            if interaction.identities
            else Resolution(None)
        )
        append(conn, interaction, resolution.customer_id, resolution.candidates)
    return resolution


def holders(engine: Engine, identity: Identity) -> list[tuple[int, bool]]:
    """Return (customer id, shared) for each holder of a raw identity, normalised first."""
    canonical = TYPES.normalise(identity, REGION)
    assert canonical is not None
    with engine.connect() as conn:
        return find_holders(conn, canonical)


def identity_rows(engine: Engine, type_: str | None = None) -> list[Row]:
    """Return the identity rows, of one type if given, in insertion order."""
    query = select(identities).order_by(identities.c.id)
    if type_ is not None:
        query = query.where(identities.c.type == type_)
    with engine.connect() as conn:
        return list(conn.execute(query))


def merge_rows(engine: Engine) -> list[Row]:
    """Return the merges, oldest first."""
    with engine.connect() as conn:
        return list(conn.execute(select(merges).order_by(merges.c.id)))


def interaction_row(engine: Engine, kind: str, external_id: str) -> Row:
    """Return the stored timeline row of one record."""
    with engine.connect() as conn:
        return conn.execute(
            select(interactions).where(
                interactions.c.kind == kind, interactions.c.external_id == external_id
            )
        ).one()


def live_customers(engine: Engine) -> list[int]:
    """Return the ids of customers not merged into another."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(customers.c.id)
                .where(customers.c.merged_into.is_(None))
                .order_by(customers.c.id)
            ).scalars()
        )


# Normalisation


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("(415) 555-0142", "US", "+14155550142"),
        ("415.555.0142", "US", "+14155550142"),
        ("1-415-555-0142", "US", "+14155550142"),
        ("+1 (415) 555-0142", "GB", "+14155550142"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("011 44 20 7946 0958", "US", "+442079460958"),
        ("0044 20 7946 0958", "GB", "+442079460958"),
        ("0044 20 7946 0958", "DE", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("030 23125741", "DE", "+493023125741"),
        ("  +44 (0)20 7946 0958 ", "US", "+442079460958"),
    ],
)
def test_phones_become_e164_using_the_default_region_and_its_international_prefix(
    raw, region, e164
):
    """A phone becomes E.164: national numbers take default_region, its IDD prefix is read."""
    assert normalise_phone(raw, region) == e164
    assert TYPES.normalise(phone(raw), region) == phone(e164)


def test_phone_answers_are_kept_for_short_values_only():
    """A number seen again is answered from memory, with the region as part of the question;
    a long value (no number is) is parsed each time and never kept, whatever its size."""
    identity._normalise_phone_cached.cache_clear()
    assert normalise_phone("020 7946 0958", "GB") == "+442079460958"
    assert normalise_phone("020 7946 0958", "GB") == "+442079460958"
    assert normalise_phone("020 7946 0958", "DE") != "+442079460958"
    info = identity._normalise_phone_cached.cache_info()
    assert (info.hits, info.currsize) == (1, 2)
    padded = " " * identity.PHONE_CACHED_CHARS + "+44 20 7946 0958"
    assert normalise_phone(padded, "US") == "+442079460958"
    assert normalise_phone("9" * 10_000, "US") is None
    assert identity._normalise_phone_cached.cache_info().currsize == 2


def test_emails_are_case_folded_and_trimmed():
    """An email is trimmed and case-folded."""
    assert normalise_email("  Ann.Example@Example.COM\n") == "ann.example@example.com"
    assert TYPES.normalise(email("\tANN@EXAMPLE.com "), REGION) == email("ann@example.com")


@pytest.mark.parametrize(
    "raw",
    [
        "anonymous",
        "Anonymous",
        "RESTRICTED",
        "unknown",
        "private",
        " Private ",
        "",
        "   ",
        "0",
        "000-000-0000",
        "+0000000000",
        "00000000000000",
        "+266696687",
        "266696687",
        "+7 378 742 833",
        "+1 200 555 0100",
        "555-0142",
        "12345",
        "+44 20 7946",
    ],
)
def test_junk_and_invalid_phones_never_normalise(raw):
    """Anonymous, restricted, empty, all-zero, Twilio's and invalid numbers are junk."""
    assert normalise_phone(raw, REGION) is None
    assert TYPES.normalise(phone(raw), REGION) is None


@pytest.mark.parametrize(
    "raw",
    ["", "  ", "anonymous", "unknown", "private", "not-an-address", "ann@", "@example.com",
     "ann example@example.com", "ann@example"],
)  # fmt: skip
def test_junk_emails_never_normalise(raw):
    """A value that is not an address, or a junk word, is no email."""
    assert normalise_email(raw) is None
    assert TYPES.normalise(email(raw), REGION) is None


@pytest.mark.parametrize(
    "identity",
    [
        Identity("zendesk_user", ""),
        Identity("zendesk_user", "0"),
        Identity("zendesk_user", "000"),
        Identity("zendesk_user", "unknown"),
        Identity("zendesk_user", "[card ending 0001]"),
        Identity("facebook", "anonymous"),
        Identity("twitter", " Private "),
        Identity("salesforce_contact", "unknown"),
        Identity("salesforce_contact", "000000000000000"),
        Identity("salesforce_contact", "000000000000000AAA"),
    ],
)
def test_junk_system_ids_never_normalise(identity):
    """Empty, all-zero and junk-word system ids (Salesforce's empty key too) are junk."""
    assert TYPES.normalise(identity, REGION) is None


def test_salesforce_ids_in_15_or_18_characters_are_one_id():
    """A Salesforce id in 15- or 18-character form normalises to the 18-character form."""
    assert salesforce_id18(SF_15) == SF_18
    assert salesforce_id18(SF_18) == SF_18
    assert salesforce_id18("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert TYPES.normalise(Identity("salesforce_contact", f" {SF_15} "), REGION) == Identity(
        "salesforce_contact", SF_18
    )
    assert salesforce_id18("003D000000QYzZ") is None
    assert salesforce_id18("003D000000QYzZ-IAL") is None


def test_normalise_all_drops_junk_and_duplicates():
    """A record's identities come out canonical, without junk and without repeats."""
    found = TYPES.normalise_all(
        [email("Ann@Example.com"), email(" ann@example.com"), phone("anonymous"),
         phone("(415) 555-0199"), phone("+1 415 555 0199")],
        REGION,
    )  # fmt: skip
    assert found == (email("ann@example.com"), phone(LINE))


# Strong identifiers


def test_differently_written_email_and_phone_find_one_customer(engine):
    """Records writing the same email or phone differently reach the same customer."""
    first = receive(engine, "ticket", "1", email("Ann@Example.com"), phone("(415) 555-0199"))
    second = receive(engine, "ticket", "2", email("  ANN@example.COM "))
    third = receive(engine, "call", "c-1", phone("+1 415-555-0199"))
    assert first.customer_id is not None
    assert second.customer_id == third.customer_id == first.customer_id
    assert live_customers(engine) == [first.customer_id]


def test_records_sharing_an_email_are_one_customer(engine):
    """Two records of different tools that share an email are one customer."""
    zendesk = receive(
        engine, "ticket", "1", Identity("zendesk_user", "101"), email("ann@example.com")
    )
    salesforce = receive(
        engine, "case", "500-1", Identity("salesforce_contact", SF_15), email("ANN@example.com")
    )
    assert salesforce.customer_id == zendesk.customer_id is not None
    held = {
        (r.type, r.value) for r in identity_rows(engine) if r.customer_id == zendesk.customer_id
    }
    assert held == {
        ("zendesk_user", "101"),
        ("email", "ann@example.com"),
        ("salesforce_contact", SF_18),
    }


def test_a_record_carrying_two_customers_strong_ids_merges_them(engine):
    """One record with the emails of two customers makes them one, history and all."""
    ann = receive(engine, "ticket", "1", email("ann@example.com"))
    other = receive(engine, "ticket", "2", email("ann.work@example.com"))
    assert ann.customer_id != other.customer_id
    both = receive(
        engine,
        "ticket",
        "3",
        Identity("zendesk_user", "101"),
        email("ann@example.com"),
        email("ann.work@example.com"),
    )
    assert both.customer_id == ann.customer_id
    assert live_customers(engine) == [ann.customer_id]
    assert interaction_row(engine, "ticket", "2").customer_id == ann.customer_id
    [merge] = merge_rows(engine)
    assert (merge.from_customer, merge.into_customer) == (other.customer_id, ann.customer_id)
    assert merge.caused_by == "test:ticket:3"


def test_identifiers_seen_together_on_one_record_link_later_records(engine):
    """Ids seen together on a trusted record belong together: a later facebook-only record joins."""
    user = receive(
        engine,
        "ticket",
        "1",
        Identity("zendesk_user", "101"),
        email("ann@example.com"),
        Identity("facebook", "100001234567890"),
        name="Ann Example",
    )
    message = receive(engine, "message", "fb-1", Identity("facebook", "100001234567890"))
    ticket = receive(engine, "ticket", "2", Identity("zendesk_user", "101"))
    assert message.customer_id == ticket.customer_id == user.customer_id is not None
    assert live_customers(engine) == [user.customer_id]


def test_zendesk_user_identities_are_linked_by_the_ticket_that_brought_them(
    client, worker, core, hooks, fake_zendesk
):
    """A Zendesk ticket links its requester's id, email, phone and facebook id to one customer."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    rows = identity_rows(core.engine)
    assert {(r.type, r.value) for r in rows} == {
        ("zendesk_user", str(ANN)),
        ("email", "ann.example@example.com"),
        ("phone", "+14155550142"),
        ("facebook", "100001234567890"),
    }
    assert {r.customer_id for r in rows} == {
        interaction_row(core.engine, "ticket", "5141").customer_id
    }
    assert {r.caused_by for r in rows} == {"zendesk:ticket:5141"}
    assert not any(r.shared for r in rows)
    facebook_only = receive(core.engine, "message", "fb-1", Identity("facebook", "100001234567890"))
    assert facebook_only.customer_id == rows[0].customer_id


# Junk never links


@pytest.mark.parametrize(
    "junk",
    [
        phone("anonymous"),
        phone("Restricted"),
        phone("unknown"),
        phone("private"),
        phone(""),
        phone("000-000-0000"),
        phone("+266696687"),
        phone("+1 200 555 0100"),
        email("unknown"),
        email("not-an-address"),
        Identity("zendesk_user", "0"),
        Identity("salesforce_contact", "000000000000000AAA"),
    ],
    ids=lambda i: f"{i.type}={i.value!r}",
)
def test_two_records_with_the_same_junk_value_stay_two_customers(engine, junk):
    """A junk value links nothing: two records carrying it stay two customers."""
    ann = receive(engine, "message", "1", Identity("twitter", "@ann"), junk)
    bob = receive(engine, "message", "2", Identity("twitter", "@bob"), junk)
    assert None not in (ann.customer_id, bob.customer_id)
    assert ann.customer_id != bob.customer_id
    assert live_customers(engine) == sorted([ann.customer_id, bob.customer_id])
    assert {r.type for r in identity_rows(engine)} == {"twitter"}
    assert merge_rows(engine) == []


def test_calls_from_a_withheld_number_make_no_customer(engine):
    """Calls with only a junk number belong to nobody and create no customer."""
    first = receive(engine, "call", "c-1", phone("anonymous"))
    second = receive(engine, "call", "c-2", phone("anonymous"))
    assert first == second == Resolution(None)
    assert live_customers(engine) == []
    assert interaction_row(engine, "call", "c-2").customer_id is None


def test_requester_ids_mangled_by_redaction_do_not_merge_two_users(
    client, worker, core, fake_zendesk, hooks
):
    """Two Zendesk users whose ids were redacted to one placeholder are not made one customer."""
    for user, ticket in ((9000000000001, 5171), (9000000019001, 5172)):
        fake_zendesk.add_user(user, f"User {user}", email=f"user{user}@example.com")
        fake_zendesk.add_ticket(ticket, user, f"ticket {ticket}")
        body = zendesk_event(
            "ticket_created__mail.json",
            id=str(ticket),
            requester_id=str(user),
            event_id=str(ticket),
        )
        hooks.zendesk(body)
    worker.drain()
    first = interaction_row(core.engine, "ticket", "5171").customer_id
    second = interaction_row(core.engine, "ticket", "5172").customer_id
    assert first is None or first != second
    assert not any(r.value.startswith("[") for r in identity_rows(core.engine))
    assert merge_rows(core.engine) == []


def test_a_requester_id_passing_the_luhn_check_still_identifies_the_user(
    client, worker, core, fake_zendesk, hooks
):
    """A Zendesk user id that happens to pass the Luhn check still links the requester."""
    user = 9000000000001
    fake_zendesk.add_user(user, "Cleo Example", email="cleo@example.com")
    fake_zendesk.add_ticket(5171, user, "ticket 5171")
    body = zendesk_event(
        "ticket_created__mail.json", id="5171", requester_id=str(user), event_id="cleo-5171"
    )
    hooks.zendesk(body)
    worker.drain()
    ticket = interaction_row(core.engine, "ticket", "5171")
    assert ticket.customer_id is not None
    assert holders(core.engine, Identity("zendesk_user", str(user))) == [
        (ticket.customer_id, False)
    ]
    assert holders(core.engine, email("cleo@example.com")) == [(ticket.customer_id, False)]


# Phone is weak


def test_phone_joins_a_customer_when_nothing_conflicts(engine):
    """A record whose phone matches a customer and whose other ids do not conflict joins them."""
    ann = receive(engine, "ticket", "1", email("ann@example.com"), phone("(415) 555-0199"))
    message = receive(engine, "message", "wa-1", Identity("whatsapp", "ann-wa"), phone(LINE))
    assert live_customers(engine) == [message.customer_id]
    assert interaction_row(engine, "ticket", "1").customer_id == message.customer_id
    assert holders(engine, email("ann@example.com")) == [(message.customer_id, False)]
    assert holders(engine, phone(LINE)) == [(message.customer_id, False)]
    [merge] = merge_rows(engine)
    assert {merge.from_customer, merge.into_customer} == {ann.customer_id, message.customer_id}
    assert merge.caused_by == "test:message:wa-1"


def test_two_sides_with_different_emails_stay_apart_and_the_line_becomes_shared(engine):
    """Both sides have emails and share none: they stay apart, the number shared on each."""
    ann = receive(engine, "ticket", "1", email("ann@example.com"), phone("(415) 555-0199"))
    bob = receive(engine, "ticket", "2", email("bob@example.com"), phone("415 555 0199"))
    assert None not in (ann.customer_id, bob.customer_id)
    assert ann.customer_id != bob.customer_id
    assert holders(engine, phone(LINE)) == [(ann.customer_id, True), (bob.customer_id, True)]
    assert merge_rows(engine) == []
    assert interaction_row(engine, "ticket", "1").customer_id == ann.customer_id


@pytest.mark.parametrize("system", ["zendesk_user", "salesforce_contact"])
def test_two_ids_of_one_tool_with_one_phone_stay_two_customers(engine, system):
    """Two Zendesk users (or Salesforce contacts) with one phone stay two, the line shared."""
    first, second = ("101", "102") if system == "zendesk_user" else (SF_15, "003D000000QYzZl")
    one = receive(engine, "ticket", "1", Identity(system, first), phone(LINE))
    two = receive(engine, "ticket", "2", Identity(system, second), phone(LINE))
    assert None not in (one.customer_id, two.customer_id)
    assert one.customer_id != two.customer_id
    assert holders(engine, phone(LINE)) == [(one.customer_id, True), (two.customer_id, True)]
    assert merge_rows(engine) == []


def test_a_third_person_on_a_shared_line_stays_apart(engine):
    """A record with a shared line and a new email neither joins nor merges anyone."""
    ann = receive(engine, "ticket", "1", email("ann@example.com"), phone(LINE))
    bob = receive(engine, "ticket", "2", email("bob@example.com"), phone(LINE))
    cleo = receive(engine, "message", "3", Identity("twitter", "@cleo"), phone(LINE))
    assert len({ann.customer_id, bob.customer_id, cleo.customer_id}) == 3
    assert holders(engine, phone(LINE)) == [
        (ann.customer_id, True),
        (bob.customer_id, True),
        (cleo.customer_id, True),
    ]
    assert merge_rows(engine) == []


# Phone-only customers


def test_a_call_from_an_unknown_number_makes_a_phone_only_customer(engine):
    """A call from a number nobody holds creates a customer holding only that number."""
    first = receive(engine, "call", "c-1", phone("(415) 555-0199"))
    second = receive(engine, "message", "sms-1", phone("+14155550199"))
    assert first.customer_id is not None
    assert second == Resolution(first.customer_id)
    [row] = identity_rows(engine)
    assert (row.customer_id, row.type, row.value, row.shared) == (
        first.customer_id,
        "phone",
        LINE,
        False,
    )


@pytest.mark.parametrize("customer_exists", [False, True], ids=["new", "known"])
def test_a_later_record_with_the_number_absorbs_the_phone_only_customer(engine, customer_exists):
    """The phone-only customer joins a later record with that number, calls and all."""
    if customer_exists:
        receive(engine, "ticket", "0", email("ann@example.com"), name="Ann Example")
    caller = receive(engine, "call", "c-1", phone("(415) 555-0199"))
    receive(engine, "message", "sms-1", phone(LINE))
    ticket = receive(
        engine, "ticket", "1", email("ann@example.com"), phone(LINE), name="Ann Example"
    )
    assert ticket.customer_id not in (None, caller.customer_id)
    assert live_customers(engine) == [ticket.customer_id]
    assert interaction_row(engine, "call", "c-1").customer_id == ticket.customer_id
    assert interaction_row(engine, "message", "sms-1").customer_id == ticket.customer_id
    assert holders(engine, phone(LINE)) == [(ticket.customer_id, False)]
    [merge] = merge_rows(engine)
    assert (merge.from_customer, merge.into_customer) == (caller.customer_id, ticket.customer_id)
    assert merge.caused_by == "test:ticket:1"
    later = receive(engine, "call", "c-2", phone(LINE))
    assert later == Resolution(ticket.customer_id)


def test_a_zendesk_ticket_absorbs_the_phone_only_caller(client, worker, core, hooks, fake_zendesk):
    """A Zendesk requester whose phone called before takes over that caller's history."""
    caller = receive(core.engine, "call", "c-1", phone("(415) 555-0142"))
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    ticket = interaction_row(core.engine, "ticket", "5141")
    assert ticket.customer_id not in (None, caller.customer_id)
    assert interaction_row(core.engine, "call", "c-1").customer_id == ticket.customer_id
    assert live_customers(core.engine) == [ticket.customer_id]
    [merge] = merge_rows(core.engine)
    assert (merge.from_customer, merge.caused_by) == (caller.customer_id, "zendesk:ticket:5141")
    # The requester is new to the store, but the call is theirs now: no first contact.
    assert len(fake_zendesk.notes(5141)) == 1


def test_a_resolution_says_whether_it_made_the_customer(engine):
    """A customer made for a record is said to be new (it has no other history), and its
    identities are linked in one statement; one that absorbed an earlier caller is not new."""
    inserts: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("INSERT INTO IDENTITIES"):
            inserts.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    ann = receive(engine, "ticket", "1", email("ann@example.com"), Identity("zendesk_user", "42"))
    assert ann.created is True
    assert len(inserts) == 1
    assert [row.type for row in identity_rows(engine)] == ["email", "zendesk_user"]
    assert receive(engine, "ticket", "2", email("ann@example.com")).created is False
    assert receive(engine, "call", "c-1", phone("(415) 555-0199")).created is True
    bob = receive(engine, "ticket", "3", email("bob@example.com"), phone(LINE))
    assert bob.customer_id is not None and bob.created is False  # the caller's history is his


# Calls from known numbers and shared lines


def test_a_call_from_a_number_held_by_one_customer_is_theirs(engine):
    """A call from a number exactly one customer holds belongs to that customer."""
    ann = receive(engine, "ticket", "1", email("ann@example.com"), phone(LINE))
    call = receive(engine, "call", "c-1", phone("415-555-0199"))
    assert call == Resolution(ann.customer_id)
    assert interaction_row(engine, "call", "c-1").customer_id == ann.customer_id
    assert len(live_customers(engine)) == 1


def test_a_call_from_a_shared_line_is_nobodys_and_names_the_candidates(engine):
    """A call from a shared line belongs to nobody; the holders are its candidates."""
    ann = receive(engine, "ticket", "1", email("ann@example.com"), phone(LINE))
    bob = receive(engine, "ticket", "2", email("bob@example.com"), phone(LINE))
    call = receive(engine, "call", "c-1", phone("(415) 555-0199"))
    assert call == Resolution(None, (ann.customer_id, bob.customer_id))
    row = interaction_row(engine, "call", "c-1")
    assert row.customer_id is None
    assert json.loads(row.candidates) == [ann.customer_id, bob.customer_id]
    assert len(live_customers(engine)) == 2


def test_a_line_shared_only_by_customers_later_merged_is_theirs_again(engine):
    """Once the sharers of a line prove one customer, a call from it is that customer's."""
    ann = receive(engine, "ticket", "1", email("ann@example.com"), phone(LINE))
    receive(engine, "ticket", "2", email("ann.work@example.com"), phone(LINE))
    both = receive(engine, "ticket", "3", email("ann@example.com"), email("ann.work@example.com"))
    assert both.customer_id == ann.customer_id
    assert holders(engine, phone(LINE)) == [(ann.customer_id, False)]
    assert receive(engine, "call", "c-1", phone(LINE)) == Resolution(ann.customer_id)


def test_context_api_shows_the_candidates_of_a_shared_line(
    client, worker, core, fake_zendesk, hooks
):
    """GET /api/v1/context?phone= on a shared line answers customer null and the candidates."""
    bob = 9000000000002
    fake_zendesk.add_user(bob, "Bob Example", email="bob@example.com", phone="+1 415 555 0142")
    fake_zendesk.add_ticket(5170, bob, "ticket 5170")
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    bobs_ticket = zendesk_event(
        "ticket_created__mail.json", id="5170", requester_id=str(bob), event_id="bob-5170"
    )
    hooks.zendesk(bobs_ticket)
    worker.drain()
    ann_id = interaction_row(core.engine, "ticket", "5141").customer_id
    bob_id = interaction_row(core.engine, "ticket", "5170").customer_id
    assert None not in (ann_id, bob_id) and ann_id != bob_id

    response = client.get(f"/api/v1/context?phone={quote('(415) 555-0142')}", headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert body["customer"] is None
    assert body["candidates"] == [
        {"id": ann_id, "name": "Ann Example"},
        {"id": bob_id, "name": "Bob Example"},
    ]
    by_email = client.get("/api/v1/context?email=ANN.EXAMPLE@example.com", headers=AUTH)
    assert by_email.get_json()["customer"]["id"] == ann_id
    phone_rows = [r for r in by_email.get_json()["customer"]["identities"] if r["type"] == "phone"]
    assert phone_rows == [{"type": "phone", "value": "+14155550142", "shared": True}]


def test_context_api_finds_the_one_holder_and_refuses_junk(client, core):
    """The context API answers a number's one holder, 404 for nobody, 400 for junk."""
    ann = receive(core.engine, "ticket", "1", email("ann@example.com"), phone(LINE), name="Ann")
    response = client.get(f"/api/v1/context?phone={quote('415.555.0199')}", headers=AUTH)
    assert response.status_code == 200
    assert response.get_json()["customer"]["id"] == ann.customer_id
    assert client.get("/api/v1/context?phone=%2B14155550100", headers=AUTH).status_code == 404
    assert client.get("/api/v1/context?phone=anonymous", headers=AUTH).status_code == 400
    assert client.get("/api/v1/context?phone=%2B266696687", headers=AUTH).status_code == 400


# Provenance


def test_every_link_and_merge_records_the_record_that_caused_it(engine):
    """Each identity row and each merge names the record that made it."""
    caller = receive(engine, "call", "c-1", phone(LINE))
    ann = receive(engine, "ticket", "1", email("ann@example.com"))
    receive(engine, "ticket", "2", email("ann@example.com"), Identity("zendesk_user", "101"))
    receive(engine, "ticket", "3", Identity("zendesk_user", "101"), phone(LINE))
    receive(engine, "ticket", "4", email("bob@example.com"), phone(LINE))
    caused = {(r.type, r.value, r.customer_id): r.caused_by for r in identity_rows(engine)}
    bob = holders(engine, email("bob@example.com"))[0][0]
    assert caused == {
        ("phone", LINE, ann.customer_id): "test:call:c-1",
        ("email", "ann@example.com", ann.customer_id): "test:ticket:1",
        ("zendesk_user", "101", ann.customer_id): "test:ticket:2",
        ("email", "bob@example.com", bob): "test:ticket:4",
        ("phone", LINE, bob): "test:ticket:4",
    }
    [merge] = merge_rows(engine)
    assert (merge.from_customer, merge.into_customer) == (caller.customer_id, ann.customer_id)
    assert merge.caused_by == "test:ticket:3"
    assert LINE in merge.reason


# Salesforce ids


def test_salesforce_lookups_accept_15_and_18_character_ids(client, core):
    """A contact stored from its 18-character id is found by its 15-character form, and back."""
    stored = receive(
        core.engine, "case", "500-1", Identity("salesforce_contact", SF_18), name="Ann Example"
    )
    again = receive(core.engine, "case", "500-2", Identity("salesforce_contact", SF_15))
    assert again.customer_id == stored.customer_id is not None
    assert holders(core.engine, Identity("salesforce_contact", SF_15)) == [
        (stored.customer_id, False)
    ]
    for form in (SF_15, SF_18):
        response = client.get(f"/api/v1/context?salesforce_contact={form}", headers=AUTH)
        assert response.status_code == 200
        assert response.get_json()["customer"]["id"] == stored.customer_id
