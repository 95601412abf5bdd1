"""The cross-channel timeline: interactions stored once per upstream record, newest first."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Row,
    and_,
    bindparam,
    case,
    func,
    not_,
    or_,
    select,
    tuple_,
    update,
)

from middleware.interaction import CALL_ENDED_STATUSES, CLOSED_STATUSES, ORDER_KINDS, Interaction
from middleware.store.tables import dumps, insert_unless_there, interactions

CONTACT_KINDS = ("ticket", "case", "call", "message", "visit")
ITEM_KINDS = ("ticket", "case")
# Later facts of a record (status, agent) replace earlier ones; descriptive fields fill gaps.
LATEST_WINS = ("status", "agent", "team", "duration_s", "direction")
FILL_GAPS = ("subject", "text", "customer_name", "link", "number", "recording")
# An order's text is what last happened to it (a refund, a cancellation): the newest says it.
LATEST_TEXT_KINDS = ORDER_KINDS


@dataclass(frozen=True)
class Appended:
    """What appending did: the stored row as it is now, and whether the record was new to
    the timeline."""

    row: Row
    created: bool

    @property
    def id(self) -> int:
        """The record's row id."""
        return int(self.row.id)

    @property
    def customer_id(self) -> int | None:
        """The customer the record is on (None: on nobody yet)."""
        return self.row.customer_id


_BY_KEY = select(interactions).where(
    interactions.c.source == bindparam("source"),
    interactions.c.kind == bindparam("kind"),
    interactions.c.external_id == bindparam("external_id"),
)
_BY_KEY_FOR_UPDATE = _BY_KEY.with_for_update()
_INSERT = interactions.insert().returning(*interactions.c)


def _new_row(
    interaction: Interaction, customer_id: int | None, candidates: tuple[int, ...], ids: str
) -> dict[str, Any]:
    """Return the values of a new record's row."""
    return {
        "customer_id": customer_id, "source": interaction.source,
        "external_id": interaction.external_id, "kind": interaction.kind,
        "channel": interaction.channel, "direction": interaction.direction,
        "occurred_at": interaction.occurred_at, "updated_at": interaction.updated_at,
        "status": interaction.status, "subject": interaction.subject,
        "text": interaction.text, "customer_name": interaction.customer_name,
        "agent": interaction.agent, "team": interaction.team, "link": interaction.link,
        "duration_s": interaction.duration_s, "identities": ids,
        "candidates": dumps(list(candidates)) if candidates else None,
        "number": interaction.number,
        "said_by": interaction.said_by if interaction.text else None,
        "recording": interaction.recording,
    }  # fmt: skip


def stored_record(conn: Connection, interaction: Interaction) -> Row | None:
    """Return the stored record of the interaction's upstream id, locked until the commit."""
    query = _BY_KEY_FOR_UPDATE if conn.dialect.name == "postgresql" else _BY_KEY
    key = {"source": interaction.source, "kind": interaction.kind,
           "external_id": interaction.external_id}  # fmt: skip
    return conn.execute(query, key).first()


RecordKey = tuple[str, str, str]  # a record's source, kind and upstream id
_BY_KEYS = select(interactions).where(
    tuple_(interactions.c.source, interactions.c.kind, interactions.c.external_id).in_(
        bindparam("keys", expanding=True)
    )
)
_BY_KEYS_FOR_UPDATE = _BY_KEYS.with_for_update()
KEYS_PER_READ = 500


def record_key(interaction: Interaction) -> RecordKey:
    """Return the key a record is stored under: its source, kind and upstream id."""
    return (interaction.source, interaction.kind, interaction.external_id)


class StoredRecords:
    """The stored records of a batch's interactions, read in one query (and locked until the
    commit, as stored_record's are), then kept as the batch appends to them.

    A merge rewrites the customer of records the batch may have read: `forget` drops them.
    """

    def __init__(self) -> None:
        self._rows: dict[RecordKey, Row | None] = {}

    def load(self, conn: Connection, wanted: Iterable[Interaction]) -> None:
        """Read the stored records of these interactions; a missing one is known absent."""
        keys = sorted({record_key(i) for i in wanted} - self._rows.keys())
        query = _BY_KEYS_FOR_UPDATE if conn.dialect.name == "postgresql" else _BY_KEYS
        for start in range(0, len(keys), KEYS_PER_READ):
            chunk = keys[start : start + KEYS_PER_READ]
            self._rows.update(dict.fromkeys(chunk))
            for row in conn.execute(query, {"keys": chunk}):
                self._rows[(row.source, row.kind, row.external_id)] = row

    def holds(self, interaction: Interaction) -> bool:
        """Tell whether the record's stored state is known (a row, or known absent)."""
        return record_key(interaction) in self._rows

    def of(self, interaction: Interaction) -> Row | None:
        """Return the record's stored row as the batch left it (None: not stored)."""
        return self._rows[record_key(interaction)]

    def keep(self, row: Row) -> None:
        """Keep a record's row as the batch just stored it."""
        self._rows[(row.source, row.kind, row.external_id)] = row

    def forget(self) -> None:
        """Drop what was read (a merge changed records' customers)."""
        self._rows.clear()


def append(
    conn: Connection,
    interaction: Interaction,
    customer_id: int | None,
    candidates: tuple[int, ...] = (),
    *,
    absent: bool = False,
    stored: Row | None = None,
) -> Appended:
    """Insert the interaction, or update the stored record of the same upstream id.

    `absent` tells that the caller knows no record of that id is stored (an import that
    looked a whole batch up at once), `stored` gives the one it read (`stored_record`).
    """
    ids = dumps([[i.type, i.value] for i in interaction.identities])
    row = stored
    if row is None and not absent:
        if interaction.creates and conn.dialect.insert_returning:
            # A record's creation is most often new to the store: insert it, and read the
            # stored one only when it is there already (an update came first).
            new = insert_unless_there(conn, interactions, *interactions.c)
            values = _new_row(interaction, customer_id, candidates, ids)
            if (inserted := conn.execute(new, values).first()) is not None:
                return Appended(inserted, created=True)
        row = stored_record(conn, interaction)
    if row is None:
        values = _new_row(interaction, customer_id, candidates, ids)
        return Appended(conn.execute(_INSERT, values).one(), created=True)

    changes: dict[str, object] = {}
    newer = interaction.updated_at >= row.updated_at
    latest = LATEST_WINS + (("text",) if interaction.kind in LATEST_TEXT_KINDS else ())
    for name in latest:
        value = getattr(interaction, name)
        if value is not None and (newer or getattr(row, name) is None):
            changes[name] = value
    # Events come out of order (an answer after the hang-up): an ended call stays ended.
    ended = interaction.kind == "call" and row.status in CALL_ENDED_STATUSES
    if ended and changes.get("status") not in CALL_ENDED_STATUSES:
        changes.pop("status", None)
    for name in FILL_GAPS:
        value = getattr(interaction, name)
        if value and (interaction.creates or not getattr(row, name)):
            changes[name] = value
    if "text" in changes:
        changes["said_by"] = interaction.said_by  # who wrote the text goes with the text
    if interaction.creates:
        # The creation event knows the real channel and time; an earlier update may not have.
        changes["channel"] = interaction.channel
        changes["occurred_at"] = interaction.occurred_at
    elif row.channel == "other" and interaction.channel != "other":
        changes["channel"] = interaction.channel
    if newer:
        changes["updated_at"] = interaction.updated_at
    if row.customer_id is None and customer_id is not None:
        changes["customer_id"] = customer_id
        changes["identities"] = ids
    if changes:
        parameters = {f"new_{name}": value for name, value in changes.items()}
        statement = _update_of(tuple(sorted(changes)))
        row = conn.execute(statement, {"row_id": row.id, **parameters}).one()
    return Appended(row, created=False)


_UPDATES: dict[tuple[str, ...], Any] = {}  # by the columns changed


def _update_of(names: tuple[str, ...]) -> Any:
    """Return the UPDATE … RETURNING of these columns of a record (built once per set)."""
    statement = _UPDATES.get(names)
    if statement is None:
        statement = _UPDATES[names] = (
            update(interactions)
            .where(interactions.c.id == bindparam("row_id"))
            .values({name: bindparam(f"new_{name}") for name in names})
            .returning(*interactions.c)
        )
    return statement


def thread_of(external_id: str) -> str:
    """Return the ticket or case id an item belongs to ('5158#9001' belongs to '5158')."""
    return external_id.split("#", 1)[0]


@dataclass(frozen=True)
class Scope:
    """One customer's interactions, optionally without one thread (a ticket or case and the
    items in it): what the timeline's reads of a customer select.

    Its clauses are bound parameters, so each kind of read builds its statement once, on
    first use: building SQLAlchemy statements costs more than running them.
    """

    customer_id: int
    exclude_thread: tuple[str, str] | None = None

    def read(
        self, conn: Connection, name: str, build: Callable[[list[Any]], Any], **values: Any
    ) -> CursorResult[*tuple[Any, ...]]:
        """Run the read called `name` (one per call site), its statement built by `build`
        from the scope's clauses the first time; `values` bind its other parameters."""
        outside = self.exclude_thread is not None
        statement = _SCOPED_READS.get((name, outside))
        if statement is None:
            clauses = [interactions.c.customer_id == bindparam("customer_id")]
            if outside:
                clauses.append(_outside_thread(bindparam("source"), bindparam("thread"),
                                               bindparam("in_thread")))  # fmt: skip
            statement = _SCOPED_READS[(name, outside)] = build(clauses)
        parameters = {"customer_id": self.customer_id, **values}
        if self.exclude_thread is not None:
            source, thread = self.exclude_thread
            parameters.update(source=source, thread=thread, in_thread=f"{thread}#%")
        return conn.execute(statement, parameters)


_SCOPED_READS: dict[tuple[str, bool], Any] = {}


def _outside_thread(source: Any, thread: Any, in_thread: Any) -> Any:
    """Return the clause that leaves one thread out: its ticket or case (`thread`) and the
    items in it (ids LIKE `in_thread`, "<thread>#%"); values or bound parameters."""
    return not_(
        and_(
            interactions.c.source == source,
            or_(
                interactions.c.external_id == thread,
                interactions.c.external_id.like(in_thread),
            ),
        )
    )


NEWEST_FIRST = (interactions.c.occurred_at.desc(), interactions.c.id.desc())
IS_OPEN = or_(
    interactions.c.status.is_(None),
    func.lower(interactions.c.status).not_in(sorted(CLOSED_STATUSES)),
)
OPEN_ITEM = (interactions.c.kind.in_(ITEM_KINDS), IS_OPEN)  # a ticket or case, not solved or closed


def history(
    conn: Connection,
    customer_id: int,
    limit: int | None = None,
    exclude_thread: tuple[str, str] | None = None,
    kinds: tuple[str, ...] | None = None,
) -> list[Row]:
    """Return the customer's interactions, newest first, optionally leaving one thread out."""

    def build(where: list[Any]) -> Any:
        query = select(interactions).where(*where).order_by(*NEWEST_FIRST)
        if kinds is not None:
            query = query.where(interactions.c.kind.in_(kinds))
        return query if limit is None else query.limit(bindparam("limit"))

    name = f"history {kinds} {'limited' if limit is not None else 'all'}"
    return list(Scope(customer_id, exclude_thread).read(conn, name, build, limit=limit))


# Whether a customer has any record outside one thread: built once, it reads one id.
_OTHER_THAN_THREAD = (
    select(interactions.c.id)
    .where(
        interactions.c.customer_id == bindparam("customer_id"),
        _outside_thread(bindparam("source"), bindparam("thread"), bindparam("in_thread")),
    )
    .limit(1)
)


def has_other_history(conn: Connection, customer_id: int, thread: tuple[str, str]) -> bool:
    """Tell whether the customer has any record outside one thread (a ticket and its
    comments): the question `history(…, limit=1, exclude_thread=…)` answers, in one id."""
    source, thread_id = thread
    parameters = {"customer_id": customer_id, "source": source, "thread": thread_id,
                  "in_thread": f"{thread_id}#%"}  # fmt: skip
    return conn.execute(_OTHER_THAN_THREAD, parameters).first() is not None


def latest_customer(conn: Connection) -> int | None:
    """Return the customer of the newest interaction that has one, or None."""
    query = select(interactions.c.customer_id).where(interactions.c.customer_id.is_not(None))
    return conn.execute(query.order_by(*NEWEST_FIRST).limit(1)).scalar()


def open_items(conn: Connection, scope: Scope, limit: int = 50) -> list[Row]:
    """Return the tickets and cases that are not solved or closed, newest first."""

    def build(where: list[Any]) -> Any:
        query = select(interactions).where(*where, *OPEN_ITEM).order_by(*NEWEST_FIRST)
        return query.limit(bindparam("limit"))

    return list(scope.read(conn, "open items", build, limit=limit))


# The open items of a customer in one tool, updated since a moment: built once, their ids.
_OPEN_IN_TOOL = (
    select(interactions.c.external_id)
    .where(
        interactions.c.customer_id == bindparam("customer_id"),
        interactions.c.source == bindparam("source"),
        interactions.c.updated_at >= bindparam("since"),
        *OPEN_ITEM,
    )
    .order_by(*NEWEST_FIRST)
)


def open_in_tool(conn: Connection, customer_id: int, source: str, since: datetime) -> list[str]:
    """Return the ids of the customer's open tickets or cases in one tool updated since a
    moment, newest first (`open_items`, for the update notes: they need only the ids)."""
    found = conn.execute(_OPEN_IN_TOOL, {"customer_id": customer_id, "source": source,
                                         "since": since})  # fmt: skip
    return list(found.scalars())


@dataclass(frozen=True)
class ContactFigures:
    """How a customer got in touch, overall and lately: channels most used first ('other'
    left out), and how many contacts (tickets, cases, calls, messages, visits) since two
    moments."""

    channels: list[str]
    channels_lately: list[str]
    since_week: int
    lately: int


def contact_figures(
    conn: Connection, scope: Scope, week: datetime, lately: datetime
) -> ContactFigures:
    """Count the customer's contacts per channel in one query: in all, since `week` and since
    `lately`. Channels are ordered by their count, then by their newest contact."""

    def build(where: list[Any]) -> Any:
        occurred = interactions.c.occurred_at
        return (
            select(
                interactions.c.channel,
                func.count(),
                func.sum(case((occurred >= bindparam("week"), 1), else_=0)),
                func.sum(case((occurred >= bindparam("lately"), 1), else_=0)),
                func.max(occurred),
            )
            .where(*where, interactions.c.kind.in_(CONTACT_KINDS))
            .group_by(interactions.c.channel)
        )

    found = scope.read(conn, "contact figures", build, week=week, lately=lately)
    rows = [(channel, int(total), int(in_week or 0), int(in_lately or 0), newest)
            for channel, total, in_week, in_lately, newest in found]  # fmt: skip
    named = [row for row in rows if row[0] != "other"]
    overall = sorted(named, key=lambda row: (row[1], row[4]), reverse=True)
    recent = sorted((row for row in named if row[3]), key=lambda row: (row[3], row[4]),
                    reverse=True)  # fmt: skip
    return ContactFigures(
        channels=[row[0] for row in overall],
        channels_lately=[row[0] for row in recent],
        since_week=sum(row[2] for row in rows),
        lately=sum(row[3] for row in rows),
    )


def customer_words(conn: Connection, scope: Scope, limit: int) -> list[Row]:
    """Return the newest texts the customer wrote or said themselves.

    Only texts known to be the customer's (`said_by`): an agent's case description or reply,
    and rows that do not tell who wrote them (stored before it was recorded), stay out.
    """

    def build(where: list[Any]) -> Any:
        query = select(interactions).where(
            *where,
            interactions.c.text.is_not(None),
            interactions.c.text != "",
            interactions.c.said_by == "customer",
        )
        return query.order_by(*NEWEST_FIRST).limit(bindparam("limit"))

    return list(scope.read(conn, "customer words", build, limit=limit))


def answered_by_each(conn: Connection, calls: Sequence[Row]) -> dict[int, list[str]]:
    """Return who answered each call (by its id), in order: the first agent, then each it was
    transferred to (a call's transfers are its "<call id>#to:<agent>" rows; see
    process/calls.py). One query for all of them."""
    if not calls:
        return {}
    query = (
        select(
            interactions.c.source,
            interactions.c.external_id,
            interactions.c.subject,
            interactions.c.agent,
        )  # fmt: skip
        .where(
            interactions.c.kind == "transfer",
            or_(
                *(
                    and_(
                        interactions.c.source == call.source,
                        interactions.c.external_id.startswith(
                            f"{call.external_id}#", autoescape=True
                        ),
                    )
                    for call in calls
                )
            ),  # fmt: skip
        )
        .order_by(interactions.c.occurred_at, interactions.c.id)
    )
    transfers = conn.execute(query).all()
    return {
        call.id: agents_in_order(
            call.agent,
            [
                t
                for t in transfers
                if t.source == call.source and t.external_id.startswith(f"{call.external_id}#")
            ],
        )  # fmt: skip
        for call in calls
    }


def agents_in_order(call_agent: str | None, transfers: Sequence[Any]) -> list[str]:
    """Return who answered a call, given its agent and its transfers (subject: from, agent:
    to), oldest first."""
    agents = [transfers[0].subject, *(t.agent for t in transfers)] if transfers else [call_agent]
    return [a for a in agents if a]
