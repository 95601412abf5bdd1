"""What the agent reads: times in the installation's zone, records named and linked as agents
know them, the gist first and no empty sections."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from middleware.integrations.plugin import Plugin
from middleware.integrations.registry import PluginRegistry
from middleware.notes.summary import (
    CustomerContext,
    SummaryRenderer,
    ago,
    and_list,
    duration,
    recognised_by,
    when,
)

NOW = datetime(2026, 12, 5, 9, 0)  # Saturday, naive UTC like the store's times
ROME = ZoneInfo("Europe/Rome")
SF_CASE = "500000000000001AAA"


@pytest.mark.parametrize(
    ("value", "zone", "said"),
    [
        ("2026-12-03T14:05:00Z", ZoneInfo("UTC"), "Thu 3 Dec 14:05 (2 days ago)"),
        ("2026-12-03T14:05:00Z", ROME, "Thu 3 Dec 15:05 (2 days ago)"),
        ("2026-12-04T23:30:00Z", ROME, "Sat 5 Dec 00:30 (today)"),  # a day later in Rome
        ("2026-12-04T23:30:00Z", ZoneInfo("UTC"), "Fri 4 Dec 23:30 (yesterday)"),
        ("2026-11-14T10:00:00Z", ZoneInfo("UTC"), "Sat 14 Nov 10:00 (3 weeks ago)"),
        ("2025-12-24T10:00:00Z", ZoneInfo("UTC"), "Wed 24 Dec 2025 10:00 (11 months ago)"),
        (datetime(2026, 12, 5, 8, 0), ZoneInfo("UTC"), "Sat 5 Dec 08:00 (today)"),
        (None, ZoneInfo("UTC"), ""),
        ("not a time", ZoneInfo("UTC"), ""),
        (12, ZoneInfo("UTC"), ""),  # a template passing a number gets nothing, not an error
    ],
)  # fmt: skip
def test_when_says_a_time_as_an_agent_reads_it(value, zone, said):
    """Weekday, day, month and time in the zone, the year only when not this one, and how long
    ago by calendar days there."""
    assert when(value, zone, NOW) == said


def test_when_without_the_relative_part():
    """when(relative=False) leaves out "(… ago)" (a call note is read when the call ends)."""
    assert when("2026-12-03T14:05:00Z", ROME, NOW, relative=False) == "Thu 3 Dec 15:05"


@pytest.mark.parametrize(
    ("days", "said"),
    [(0, "today"), (1, "yesterday"), (2, "2 days ago"), (13, "13 days ago"), (14, "2 weeks ago"),
     (59, "8 weeks ago"), (60, "2 months ago"), (365, "1 year ago"), (800, "2 years ago"),
     (-1, "tomorrow"), (-3, "in 3 days")],
)  # fmt: skip
def test_ago_counts_days_weeks_months_years(days, said):
    assert ago(days) == said


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(None, "0 s"), (45, "45 s"), (272, "4 min 32 s"), (3600, "1 h"), (3900, "1 h 5 min")],
)
def test_duration(seconds, said):
    assert duration(seconds) == said


def test_identity_line_names_email_and_phone_first():
    """ "Recognised by email and phone": the kinds of identity, never their values."""
    assert and_list(recognised_by(["phone", "email", "phone"])) == "email and phone"
    assert and_list(recognised_by(["crm_contact", "email"])) == "email and crm contact"
    assert recognised_by(["crm_contact", "email"], system_ids={"crm_contact"}) == ["email"]
    assert recognised_by(["crm_contact"], system_ids={"crm_contact"}) == ["crm contact"]
    assert and_list(["a", "b", "c"]) == "a, b and c"


def test_plugins_name_and_link_their_records():
    """Zendesk "#2" at <url>/agent/tickets/2; a Salesforce case by its CaseNumber at its
    Lightning URL; a call is a "phone call"; a plugin's default names no id and links nothing."""
    registry = PluginRegistry.from_entry_points()
    zendesk, salesforce = registry.classes["zendesk"], registry.classes["salesforce"]
    ticket = {"source": "zendesk", "kind": "ticket", "external_id": "2"}
    assert zendesk.record_label(ticket) == "#2"
    assert zendesk.record_url(ticket, {"url": "https://acme.zendesk.com/"}) == (
        "https://acme.zendesk.com/agent/tickets/2"
    )
    assert zendesk.record_url({**ticket, "external_id": "2/../users"}, {"url": "https://a"}) is None
    case = {"source": "salesforce", "kind": "case", "external_id": SF_CASE, "number": "00001001"}
    assert salesforce.record_label(case) == "case 00001001"
    assert salesforce.record_label({**case, "number": None}) == "case"
    assert salesforce.record_url(case, {"instance_url": "https://acme.my.salesforce.com"}) == (
        f"https://acme.my.salesforce.com/lightning/r/Case/{SF_CASE}/view"
    )
    linked = {**case, "link": f"https://na5-api.salesforce.com/{SF_CASE}"}
    assert salesforce.record_url(linked, {}) == (
        f"https://na5.salesforce.com/lightning/r/Case/{SF_CASE}/view"
    )
    assert (
        salesforce.record_url({**case, "external_id": "x/../y"}, {"instance_url": "https://a"})
        is None
    )
    call = {"source": "twilio", "kind": "call", "external_id": "CA" + "0" * 32}
    assert registry.classes["twilio"].record_label(call) == "phone call"
    assert Plugin.record_label({"kind": "ticket", "external_id": "123"}) == "ticket"
    assert Plugin.record_url(ticket, {"url": "https://a"}) is None


def item(**fields) -> dict:
    base = {
        "source": "zendesk", "external_id": "2", "kind": "ticket", "channel": "email",
        "direction": "inbound", "status": "open", "subject": "Double charge on INV-1042",
        "excerpt": None, "occurred_at": "2026-12-03T14:05:00Z", "agent": None, "team": None,
        "link": None, "duration_s": None, "number": None, "said": None, "agents": [],
    }  # fmt: skip
    return {**base, **fields}


def context(**fields) -> CustomerContext:
    values = {
        "customer": {"id": 1, "name": "Carla Rossi", "identities": [], "preferred_channels": []},
        "open_items": [], "interactions": [], "said": [], "preferred_channels": [], "mood": None,
        "repeat_contacts_7d": 0,
    }  # fmt: skip
    return CustomerContext(**{**values, **fields})


def renderer(**settings) -> SummaryRenderer:
    registry = PluginRegistry.from_entry_points()
    records = lambda i: (  # noqa: E731 - the registry's naming, with settings of our own
        registry.classes[i["source"]].record_label(i),
        registry.classes[i["source"]].record_url(i, settings.get(i["source"], {})),
    )
    return SummaryRenderer(plugin_folders=registry.templates_folders(), timezone="Europe/Rome",
                           now=lambda: NOW, records=records)  # fmt: skip


def test_summary_leads_with_who_how_often_and_channels_then_open_items_and_contacts():
    """The gist in the first lines; the customer's words under their record; one identity
    line; times in the zone; no raw ids in the text."""
    ticket = item(said="my card was charged $49 twice… Please refund")
    case = item(source="salesforce", external_id=SF_CASE, kind="case", number="00001001",
                channel="web", status="new", said=None)  # fmt: skip
    call = item(source="twilio", external_id="CA" + "1" * 32, kind="call", channel="phone",
                status="completed", subject=None, agent="sam", agents=["sam"], duration_s=272,
                occurred_at="2026-12-04T16:52:00Z")  # fmt: skip
    text = renderer(zendesk={"url": "https://acme.zendesk.com"},
                    salesforce={"instance_url": "https://acme.my.salesforce.com"}).render(
        "zendesk",
        context(open_items=[ticket, case], interactions=[call, ticket, case], contacts_lately=3,
                channels_lately=["phone", "email", "web"], recognised_by=["email", "phone"]),
    )  # fmt: skip
    assert text == (
        "Carla Rossi — 3 contacts in 30 days: phone, email, web\n"
        "Open:\n"
        "- #2 · open · Double charge on INV-1042 · https://acme.zendesk.com/agent/tickets/2\n"
        '  "my card was charged $49 twice… Please refund"\n'
        "- case 00001001 · new · Double charge on INV-1042 · "
        f"https://acme.my.salesforce.com/lightning/r/Case/{SF_CASE}/view\n"
        "Latest contacts:\n"
        "- Fri 4 Dec 17:52 (yesterday) · phone call, inbound, 4 min 32 s, answered by sam\n"
        "Recognised by email and phone"
    )


def test_summary_omits_empty_sections():
    """No "none", "unknown" or empty headings: a customer with nothing open says only who."""
    text = renderer().render("summary", context(customer={"id": 1, "name": None,
                                                          "identities": []}))  # fmt: skip
    assert text == "Returning customer"
    messages = [item(kind="message", channel="sms", subject=None, said="still waiting",
                     source="twilio", external_id="SM" + "2" * 32, status=None)]  # fmt: skip
    text = renderer().render("summary", context(interactions=messages, contacts_lately=1,
                                                channels_lately=["sms"]))  # fmt: skip
    assert text == (
        "Carla Rossi — 1 contact in 30 days: sms\n"
        "Latest contacts:\n"
        "- Thu 3 Dec 15:05 (2 days ago) · message · sms\n"
        '  "still waiting"'
    )


def call_facts(**fields) -> dict:
    base = {
        "source": "twilio", "external_id": "CA" + "3" * 32, "direction": "inbound",
        "status": "completed", "ended": True, "started_at": "2026-12-03T13:05:00Z",
        "updated_at": "2026-12-03T13:10:00Z", "duration_s": 272, "phone": "+14155550199",
        "agents": ["mia", "lee"], "team": "billing",
        "transfers": [{"at": "2026-12-03T13:07:10Z", "from": "mia", "to": "lee",
                       "team": "billing", "text": "Transferred from mia to lee (billing)"}],
        "handoffs": [],
    }  # fmt: skip
    return {**base, **fields}


def test_call_note_says_when_how_long_and_who_answered_without_the_call_id():
    """ "Phone call Thu 3 Dec 14:05, 4 min 32 s, answered by mia → lee (transferred)"."""
    text = renderer().render_call(call_facts(), "Carla Rossi")
    assert text == (
        "Phone call Thu 3 Dec 14:05, 4 min 32 s, answered by mia → lee (transferred)\n"
        "Caller: Carla Rossi, +14155550199\n"
        "- Thu 3 Dec 14:07: Transferred from mia to lee (billing)"
    )
    missed = call_facts(status="no-answer", agents=[], transfers=[], duration_s=None,
                        direction="outbound", phone=None)  # fmt: skip
    assert renderer().render_call(missed, "Carla Rossi") == (
        "Phone call Thu 3 Dec 14:05, not answered (no-answer)\nCalled: Carla Rossi"
    )


def test_call_note_lists_the_handoff_notes_with_who_left_them_and_when():
    """ "Handoff notes:" then "- mia, Thu 3 Dec 14:06: …", a note's next line indented in it."""
    handoffs = [  # the first typed while the call rang, before anyone answered
        {"at": "2026-12-03T13:05:20Z", "by": None, "text": "Wants a refund.\nCalls back at 5"},
        {"at": "2026-12-03T13:06:30Z", "by": "mia", "text": "Refund approved up to $50."},
    ]
    text = renderer().render_call(call_facts(handoffs=handoffs), "Carla Rossi")
    assert text.splitlines()[2:] == [
        "- Thu 3 Dec 14:07: Transferred from mia to lee (billing)",
        "Handoff notes:",
        "- Thu 3 Dec 14:05: Wants a refund.",
        "  Calls back at 5",
        "- mia, Thu 3 Dec 14:06: Refund approved up to $50.",
    ]


def test_an_installation_says_times_in_its_timezone(database_url):
    """timezone: Asia/Tokyo → a call at 13:05 UTC is noted at 22:05."""
    from middleware.installation import build_installation
    from tests.conftest import build_config

    core = build_installation(build_config(database_url, timezone="Asia/Tokyo"))
    try:
        note = core.renderer.render_call(call_facts(transfers=[]), None)
    finally:
        core.dispose()
    assert note.splitlines()[0] == ("Phone call Thu 3 Dec 22:05, 4 min 32 s, answered by mia → lee")
