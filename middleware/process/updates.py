"""News that crosses tools: one short note on each open item of the customer in other tools.

When something new happens for a customer (a call ends, a ticket or case is opened, an SMS
comes in), each of their open tickets and cases in the other tools gets one short update
note, so support's ticket learns at once that billing opened a case. Open means not solved
or closed and updated within `call_notes.open_days`. Every update goes through the outbox:
once per open item and event (its marker is the event's interaction and purpose), never
echoed (the marker again), within the rate budgets; a tool whose `update_notes` setting is
off gets none.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import Connection, Row

from middleware.customers.edits import customer_name
from middleware.customers.timeline import ITEM_KINDS, open_in_tool, thread_of
from middleware.integrations.plugin import Capability, Plugin
from middleware.interaction import Interaction
from middleware.notes.outbox import Outbox
from middleware.notes.summary import item_of
from middleware.process.calls import call_facts
from middleware.store.tables import utcnow

if TYPE_CHECKING:
    from middleware.customers.timeline import Appended
    from middleware.installation import Installation

CALL_NOTE = "call"  # the purpose of a call's note (its marker says co-<id>-call)
# A short follow-up to the call's note, once each, when the caller's words or its recording
# arrive after the call ended (so an agent reading the ticket learns of them).
CALL_WORDS_NOTE = "words"
CALL_RECORDING_NOTE = "recording"
UPDATE_NOTE = "update"  # the purpose of the note about a new ticket, case or message
NEWS_KINDS = (*ITEM_KINDS, "message")


class News(NamedTuple):
    """What happened, for the update notes about it: its record, tool and customer."""

    id: int
    source: str
    customer_id: int


def open_items_of(conn: Connection, customer_id: int, source: str, open_days: int) -> list[str]:
    """Return the ids of the customer's open tickets or cases in one tool, updated within
    open_days."""
    return open_in_tool(conn, customer_id, source, utcnow() - timedelta(days=open_days))


def queue_update_notes(
    core: Installation,
    conn: Connection,
    news: News,
    purpose: str,
    body: Callable[[], str],
) -> int:
    """Queue the body on each open item of the news' customer in the other tools; return how
    many.

    The tool the news happened in is left out: its agents see it there already. The body is
    written only once an open item is found: most news has none elsewhere.
    """
    queued = 0
    written: str | None = None
    for plugin in core.registry.with_capability(Capability.WRITE_NOTE):
        if plugin.key == news.source or not plugin.writes_update_notes():
            continue
        items = open_items_of(conn, news.customer_id, plugin.key,
                              core.config.call_notes["open_days"])  # fmt: skip
        for item in items:
            written = body() if written is None else written
            if Outbox.enqueue(conn, core.markers, plugin.key, thread_of(item),
                              news.id, purpose, written,
                              max_bytes=plugin.note_max_bytes):  # fmt: skip
                queued += 1
    return queued


def queue_call_notes(
    core: Installation, conn: Connection, call: Row, purpose: str = CALL_NOTE
) -> int:
    """Queue one short note about an ended call on each open ticket or case of its customer.

    A late note (its recording or the caller's words, after the call's note) says only what is
    new: the agent read the rest in the call's note."""

    def body() -> str:
        facts = call_facts(conn, call)
        if purpose in (CALL_WORDS_NOTE, CALL_RECORDING_NOTE):
            facts["late"] = purpose
        return core.renderer.render_call(facts, customer_name(conn, call.customer_id))

    news = News(call.id, call.source, call.customer_id)
    return queue_update_notes(core, conn, news, purpose, body)


def is_news(interaction: Interaction) -> bool:
    """Tell whether an event announces something new worth an update elsewhere: a ticket or
    case being opened, or a message or visit from the customer."""
    if not interaction.creates:
        return False
    if interaction.kind in ("message", "visit"):
        return interaction.direction == "inbound"
    return interaction.kind in ITEM_KINDS


def queue_news_notes(
    core: Installation,
    conn: Connection,
    plugin: Plugin,
    interaction: Interaction,
    appended: Appended,
) -> int:
    """Queue update notes about a new ticket, case or message on the customer's open items
    in the other tools; return how many."""
    if appended.customer_id is None or not is_news(interaction):
        return 0

    def body() -> str:
        row = appended.row  # the record as stored, by this transaction
        item = core.renderer.named(item_of(row))
        name = customer_name(conn, row.customer_id)
        return core.renderer.render_update(item, plugin.tool_name(), name)

    news = News(appended.id, interaction.source, appended.customer_id)
    return queue_update_notes(core, conn, news, UPDATE_NOTE, body)
