"""The figures a summary leads with, read from a stored timeline: how often and where the
customer got in touch, overall and lately, and who answered each call."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import event

from middleware.customers.identity import create_customer
from middleware.customers.timeline import append
from middleware.interaction import Interaction
from middleware.notes.summary import build_context
from tests.customers.test_identity import engine as engine  # noqa: F401 (the fixture)

NOW = datetime(2026, 3, 2, 12, 0)


def record(
    external_id: str, kind: str, channel: str, days_ago: float, source: str = "twilio",
    agent: str | None = None, subject: str | None = None,
) -> Interaction:  # fmt: skip
    """Return a record of the customer's, days_ago before NOW."""
    at = NOW - timedelta(days=days_ago)
    return Interaction(source=source, external_id=external_id, kind=kind, channel=channel,
                       occurred_at=at, updated_at=at, record_ref=f"{source}:{external_id}",
                       agent=agent, subject=subject)  # fmt: skip


def test_contacts_are_counted_per_channel_overall_lately_and_this_week(engine):
    """Phone is used most, then email; 'other' counts as a contact but is never a channel."""
    timeline = [
        record("CA1", "call", "phone", 1, agent="sam"),
        record("CA1#to:lee", "transfer", "phone", 1, agent="lee", subject="sam"),
        record("CA2", "call", "phone", 5, agent="mia"),
        record("CA3", "call", "phone", 20),
        record("CA1", "call", "phone", 2, source="cti", agent="ray"),  # another tool's CA1
        record("101", "ticket", "email", 3, source="zendesk"),
        record("102", "ticket", "email", 60, source="zendesk"),
        record("103", "ticket", "other", 1, source="zendesk"),
    ]
    with engine.begin() as conn:
        customer = create_customer(conn, "Ann")
        for item in timeline:
            append(conn, item, customer)
        context = build_context(conn, customer, recent_limit=10, now=NOW)
    assert context.customer["preferred_channels"] == ["phone", "email"]
    assert context.repeat_contacts_7d == 5  # four calls and tickets within 7 days, and 'other'
    assert context.contacts_lately == 6  # within 30 days: the 102 ticket is older
    assert context.channels_lately == ["phone", "email"]
    agents = {(i["source"], i["external_id"]): i["agents"] for i in context.interactions
              if i["kind"] == "call"}  # fmt: skip
    assert agents == {
        ("twilio", "CA1"): ["sam", "lee"],  # answered, then transferred
        ("twilio", "CA2"): ["mia"],
        ("twilio", "CA3"): [],
        ("cti", "CA1"): ["ray"],  # the same id in another tool is another call
    }


def test_a_customer_with_no_contacts_has_no_figures(engine):
    """A customer known only by a trusted record has no channels and no counts."""
    with engine.begin() as conn:
        customer = create_customer(conn, "Ann")
        context = build_context(conn, customer, now=NOW)
    assert context.customer["preferred_channels"] == []
    assert (context.repeat_contacts_7d, context.contacts_lately) == (0, 0)
    assert context.channels_lately == [] and context.interactions == []


def test_a_first_contact_reads_the_same_context_without_reading_the_timeline(engine):
    """A customer whose only records are one ticket and its comments: told that there is no
    history outside that ticket, the context is the one read from the store, in two reads."""
    thread = [
        record("5158", "ticket", "email", 0.1, source="zendesk", subject="Router"),
        record("5158#9001", "comment", "email", 0.05, source="zendesk"),
    ]
    with engine.begin() as conn:
        customer = create_customer(conn, "Ann")
        for item in thread:
            append(conn, item, customer)
        read = build_context(conn, customer, exclude_thread=("zendesk", "5158"), now=NOW)
        statements: list[str] = []
        listen = event.listens_for(conn, "before_cursor_execute")
        listen(lambda *args: statements.append(args[2]))
        told = build_context(conn, customer, exclude_thread=("zendesk", "5158"), now=NOW,
                             history_outside=False)  # fmt: skip
    assert told == read
    assert told.customer["name"] == "Ann" and told.interactions == []
    assert len(statements) == 2  # the customer and their identities
    assert not any("FROM interactions" in s for s in statements)
