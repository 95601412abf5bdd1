"""After the reply: map → enrich → resolve identity → append to timeline → queue notes
(a summary on a new ticket or case, updates on open items in the other tools)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime

from sqlalchemy import Connection, Row, bindparam, select

from middleware.customers.identity import (
    RESOLVE_TRIES,
    KnownHolders,
    Resolution,
    ResolutionRaced,
    lock_customers,
    lock_some,
    record_lock,
    resolve_customer,
)
from middleware.customers.preferences import record_preference
from middleware.customers.redaction import redact
from middleware.customers.timeline import (
    ITEM_KINDS,
    Appended,
    StoredRecords,
    append,
    has_other_history,
    stored_record,
    thread_of,
)
from middleware.ingest.inbox import request_of
from middleware.installation import Installation
from middleware.integrations.plugin import UNVERIFIED, Capability, InboundEvent, Plugin
from middleware.interaction import CALL_ENDED_STATUSES, CustomerRecord, Identity, Interaction
from middleware.notes.outbox import Outbox, queued_notes
from middleware.notes.summary import build_context
from middleware.process.calls import record_transfer
from middleware.process.updates import (
    CALL_NOTE,
    CALL_RECORDING_NOTE,
    CALL_WORDS_NOTE,
    queue_call_notes,
    queue_news_notes,
)
from middleware.store.tables import (
    delivery_customers,
    delivery_records,
    insert_unless_there,
    interactions,
)

SUMMARY = "summary"


class NotConfigured(Exception):
    """A stored delivery names an integration that is not configured any more."""


# Settles deliveries in the transaction that records them, given each one's trail steps.
Finish = Callable[[Connection, list[tuple[Row, list[str]]]], None]


@dataclass(frozen=True)
class Ready:
    """A stored delivery whose events are made ready to record (see prepare_delivery).

    Each event is either made ready, or a step of the trail saying why it is not recorded.
    """

    row: Row
    plugin: Plugin
    events: tuple[Prepared | str, ...]


def prepare_delivery(core: Installation, row: Row) -> Ready:
    """Make every unseen event of a stored delivery ready to record, touching no store.

    Nothing in an unverified delivery is believed, and some webhooks only name their record:
    such records are read back upstream here, in the worker. Raise what prepare_event raises.
    """
    plugin = core.registry.get(row.plugin)
    if plugin is None:
        raise NotConfigured(f"integration {row.plugin!r} is not configured")
    keys = set(json.loads(row.event_keys))
    request = request_of(row)
    unverified = request.proof == UNVERIFIED
    events: list[Prepared | str] = []
    for event in plugin.parse(request):
        if event.key not in keys:
            continue
        if unverified or event.type in plugin.read_back_types:
            confirmed = plugin.read_back(event)
            if confirmed is None:
                why = "unverified delivery" if unverified else "nothing to record"
                events.append(f"{event.key}: not found upstream ({why}), ignored")
                continue
            event = confirmed
        events.append(prepare_event(core, plugin, event, row.received_at))
    return Ready(row, plugin, tuple(events))


def record_deliveries(
    core: Installation, batch: Sequence[Ready], finish: Finish
) -> list[list[int]]:
    """Record deliveries made ready, in order, in one transaction in which `finish` settles
    them: all of them are recorded and settled, or none. Return the notes each one queued.

    Every identity and record lock they need is taken at once, in one sorted statement (see
    lock_some), so two workers' batches never wait for each other in a circle on those, and
    the holders of all their identities are read in one query, kept up to date as the batch
    is resolved (KnownHolders), and those holders' rows are locked in one sorted statement.
    Their stored records are read in one query too, kept as the batch appends (StoredRecords).
    Customers met later (a comment's, one merged in) are locked as resolution goes
    (lock_customers): a deadlock there is rare, and fails the batch, which the worker then
    records one by one.
    """
    events = [e for d in batch for e in d.events if isinstance(e, Prepared)]
    needed = [lock for e in events for lock in locks_of(e)]
    known = _locked_by_caller()
    topics: set[str] = set()
    queued_by_each: list[list[int]] = []
    trails: list[tuple[Row, list[str]]] = []
    spoken: list[Spoken] = []
    with core.engine.begin() as conn:
        lock_some(conn, needed)
        known.load(conn, [identity for e in events for identity in e.identities])
        known.lock_all_read(conn)
        records = StoredRecords()
        records.load(conn, [e.interaction for e in events if e.interaction is not None])
        for delivery in batch:
            steps: list[str] = []
            queued: list[int] = []
            timing = queued_notes.set(queued)
            try:
                for event in delivery.events:
                    if isinstance(event, str):
                        steps.append(event)
                        continue
                    recorded = record_event(core, conn, delivery.plugin, event, known=known,
                                            records=records)  # fmt: skip
                    steps.append(recorded.step)
                    topics |= recorded.topics
                    spoken.append((delivery.row.id, recorded.customer_id, recorded.record_id))
            finally:
                queued_notes.reset(timing)
            trails.append((delivery.row, steps))
            queued_by_each.append(queued)
        remember(conn, spoken)
        finish(conn, trails)
        core.wakeups.topics_in(conn, topics)  # the other processes' pops, at commit
    core.live.publish(topics)
    return queued_by_each


def _locked_by_caller() -> KnownHolders:
    """Return what resolutions start from when their caller locked their records' identities."""
    known = KnownHolders()
    known.values_locked = True
    return known


@dataclass(frozen=True)
class Prepared:
    """An event made ready to record: mapped, redacted, enriched, its identities normalised.

    Exactly one of interaction (a record for the timeline) and record (a trusted customer
    record, such as a Salesforce contact) is set.
    """

    key: str
    identities: tuple[Identity, ...]
    interaction: Interaction | None = None
    record: CustomerRecord | None = None


@dataclass(frozen=True)
class Recorded:
    """What recording an event did: the trail's step, the pop topics it changed, the customer
    it was recorded on and the timeline record it stored (none for a customer record)."""

    step: str
    topics: set[str] = field(default_factory=set)
    customer_id: int | None = None
    record_id: int | None = None
    merged: bool = False  # customers were merged: records read before may name them


def prepare_event(
    core: Installation, plugin: Plugin, event: InboundEvent, received: datetime
) -> Prepared | str:
    """Map, redact and enrich one event (no store is touched); a string says why it is not
    recorded. Raise MappingError for a payload the mapping does not fit."""
    mapping = core.mappings[plugin.key]
    if core.is_own_note(plugin, event):
        return f"{event.key}: own note, ignored"
    if not mapping.handles(event.type):
        return f"{event.key}: {event.type} ignored"
    region = core.config.default_region
    if mapping.describes_customer(event.type):
        record = mapping.apply_customer(event.type, event.payload)
        cleaned = [Identity(i.type, i.value.replace("\x00", "")) for i in record.identities]
        found = core.identity_types.normalise_all(cleaned, region)
        if not found:
            return f"{event.key}: {record.record_ref} carries no usable identifier"
        name = (record.customer_name or "").replace("\x00", "") or None
        return Prepared(event.key, found, record=replace(record, customer_name=name))
    interaction = redact_interaction(mapping.apply(event.type, event.payload, received))
    if plugin.has_capability(Capability.ENRICH):
        interaction = plugin.enrich(interaction)
    found = core.identity_types.normalise_all(interaction.identities, region)
    return Prepared(event.key, found, interaction=replace(interaction, identities=found))


def record_event(
    core: Installation,
    conn: Connection,
    plugin: Plugin,
    prepared: Prepared,
    *,
    notes: bool = True,
    known: KnownHolders | None = None,
    absent: bool = False,
    records: StoredRecords | None = None,
) -> Recorded:
    """Resolve the customer and append to the timeline in the caller's transaction, and
    queue the notes the event calls for (none when `notes` is false: imported history).

    A batch passes what it read for all its events: the identities' holders (`known`), and
    either that the record is not stored yet (`absent`, an import) or the stored records
    (`records`, deliveries recorded together).
    """
    found, interaction = prepared.identities, prepared.interaction
    if known is None:  # a webhook's: lock what it touches (an import holds the whole lock)
        lock_some(conn, locks_of(prepared))
        known = KnownHolders()
        known.values_locked = True
    if interaction is None:
        assert prepared.record is not None
        linked = _link_customer_record(core, conn, prepared.record, found, prepared.key, known)
        if records is not None and linked.merged:
            records.forget()  # the merged customers' records are this one's now
        return linked
    if found:
        resolution = resolve_customer(
            conn, found, interaction.record_ref, interaction.customer_name,
            types=core.identity_types, known=known,
        )  # fmt: skip
    else:
        resolution = thread_resolution(conn, interaction)
    if records is not None and resolution.merged:
        records.forget()  # the merged customers' records are this one's now
    # A call's stored state is read once (and locked): the transfer and the note need it.
    stored, known_absent = None, absent
    if records is not None and not absent and records.holds(interaction):
        stored = records.of(interaction)
        known_absent = stored is None
    elif interaction.kind == "call" and not absent:
        stored = stored_record(conn, interaction)
        known_absent = stored is None
    before = stored if interaction.kind == "call" else None
    appended = append(conn, interaction, resolution.customer_id, resolution.candidates,
                      absent=known_absent, stored=stored)  # fmt: skip
    if records is not None:
        records.keep(appended.row)
    said = ""
    if interaction.preferred_channels is not None and appended.customer_id is not None:
        said = "; " + record_preference(
            conn, appended.customer_id, interaction.preferred_channels, interaction.record_ref,
            interaction.occurred_at,
        )  # fmt: skip
    queued = 0
    if interaction.kind == "call":
        # A call new to the store (absent) had no agent before: no transfer to record.
        ended = None if absent else record_transfer(conn, interaction, appended.row, before)
        if ended is not None and notes:
            queued = queue_call_notes(core, conn, ended, late_call_purpose(before, interaction))
    elif notes:
        queued = int(queue_summary_note(core, conn, plugin, interaction, appended,
                                        new_customer=resolution.created))  # fmt: skip
        queued += queue_news_notes(core, conn, plugin, interaction, appended)
    who = f"customer {appended.customer_id}" if appended.customer_id else "no customer"
    queued_text = f", {queued} note{'s' if queued > 1 else ''} queued" if queued else ""
    step = f"{prepared.key}: {interaction.record_ref} → {who}{queued_text}{said}"
    topics = _topics(found, appended.customer_id, resolution.candidates)
    return Recorded(step, topics, appended.customer_id, appended.id)


def locks_of(prepared: Prepared) -> tuple[Identity, ...]:
    """Return what recording an event locks (lock_some): its identities, and its record."""
    interaction = prepared.interaction
    if interaction is None:
        return prepared.identities
    record = record_lock(interaction.source, interaction.kind, interaction.external_id)
    return (*prepared.identities, record)


def late_call_purpose(before: Row | None, interaction: Interaction) -> str:
    """Return the purpose of an ended call's note: its words or recording arriving after it
    ended (Twilio sends both after the call) go out once more, each once; else the call's."""
    if before is None or (before.status or "") not in CALL_ENDED_STATUSES:
        return CALL_NOTE
    if interaction.text and not before.text:
        return CALL_WORDS_NOTE
    if interaction.recording and not before.recording:
        return CALL_RECORDING_NOTE
    return CALL_NOTE


def _link_customer_record(
    core: Installation,
    conn: Connection,
    record: CustomerRecord,
    found: tuple[Identity, ...],
    key: str,
    known: KnownHolders | None,
) -> Recorded:
    """Link the identifiers of a trusted record (a Salesforce contact) as one customer's."""
    resolution = resolve_customer(
        conn, found, record.record_ref, record.customer_name, types=core.identity_types,
        known=known,
    )  # fmt: skip
    step = f"{key}: {record.record_ref} → customer {resolution.customer_id}"
    topics = _topics(found, resolution.customer_id, resolution.candidates)
    return Recorded(step, topics, resolution.customer_id, merged=resolution.merged)


# A delivery, the customer one of its events was recorded on, and the record it stored.
Spoken = tuple[int | None, int | None, int | None]


def remember(conn: Connection, spoken: Sequence[Spoken]) -> None:
    """Note what deliveries recorded and whom they spoke of: a record then finds the
    deliveries that told of it, and erasing a customer erases those that spoke of them.
    One statement per table for all of them; what is noted already is left as it is."""
    records = sorted({(d, r) for d, _, r in spoken if d is not None and r is not None})
    people = sorted({(d, c) for d, c, _ in spoken if d is not None and c is not None})
    if records:
        conn.execute(insert_unless_there(conn, delivery_records),
                     [{"delivery_id": d, "interaction_id": r} for d, r in records])  # fmt: skip
    if people:
        conn.execute(insert_unless_there(conn, delivery_customers),
                     [{"delivery_id": d, "customer_id": c} for d, c in people])  # fmt: skip


def _topics(
    found: tuple[Identity, ...], customer_id: int | None, candidates: tuple[int, ...]
) -> set[str]:
    """Name what changed, for the screen-pops that show it."""
    topics = {f"phone:{i.value}" for i in found if i.type == "phone"}
    topics |= {f"customer:{cid}" for cid in (customer_id, *candidates) if cid is not None}
    return topics


def redact_interaction(interaction: Interaction) -> Interaction:
    """Redact card numbers and secrets from the customer's words before they are stored.

    NUL characters go too: PostgreSQL text cannot hold them, and no tool means them.
    """
    text_fields = {
        f.name: getattr(interaction, f.name).replace("\x00", "")
        for f in fields(interaction)
        if isinstance(getattr(interaction, f.name), str)
    }
    identities = tuple(
        Identity(i.type, i.value.replace("\x00", "")) for i in interaction.identities
    )
    cleaned = replace(interaction, **text_fields, identities=identities)
    return replace(cleaned, subject=redact(cleaned.subject), text=redact(cleaned.text))


def thread_resolution(conn: Connection, interaction: Interaction) -> Resolution:
    """Give a record that carries no identity the customer of its ticket or case (a comment),
    holding that customer's row as a resolution holds its holders' (see lock_customers).

    The caller holds the record's lock (lock_some), which keeps the whole lock out."""
    thread = thread_of(interaction.external_id)
    if thread == interaction.external_id:
        return Resolution(None)
    for _ in range(RESOLVE_TRIES):
        customer_id = _thread_customer(conn, interaction, thread)
        if customer_id is None or lock_customers(conn, [customer_id]):
            return Resolution(customer_id)
    raise ResolutionRaced(f"the customer of {interaction.record_ref} kept changing")


_THREAD_CUSTOMER = select(interactions.c.customer_id).where(
    interactions.c.source == bindparam("source"),
    interactions.c.external_id == bindparam("thread"),
    interactions.c.kind.in_(ITEM_KINDS),
)


def _thread_customer(conn: Connection, interaction: Interaction, thread: str) -> int | None:
    """Find the customer of the ticket or case a comment belongs to."""
    found = conn.execute(_THREAD_CUSTOMER, {"source": interaction.source, "thread": thread})
    return found.scalar()


def queue_summary_note(
    core: Installation,
    conn: Connection,
    plugin: Plugin,
    interaction: Interaction,
    appended: Appended,
    *,
    new_customer: bool = False,
) -> bool:
    """Queue a summary note on a new ticket or case whose customer has other history.

    `new_customer`: the customer was made for this record, so it has no other history.
    """
    customer_id = appended.customer_id
    if not (
        interaction.creates
        and interaction.kind in ITEM_KINDS
        and customer_id is not None
        and plugin.has_capability(Capability.WRITE_NOTE)
    ):
        return False
    thread = (interaction.source, thread_of(interaction.external_id))
    has_history = not new_customer and has_other_history(conn, customer_id, thread)
    if not has_history and not core.config.summary["note_on_first_contact"]:
        return False
    settings = core.config.summary
    context = build_context(conn, customer_id, settings["recent_limit"], exclude_thread=thread,
                            mood=settings["mood"], history_outside=has_history)  # fmt: skip
    body = core.renderer.render(plugin.key, context)
    return Outbox.enqueue(conn, core.markers, plugin.key, interaction.external_id, appended.id,
                          SUMMARY, body, max_bytes=plugin.note_max_bytes)  # fmt: skip
