"""Build a customer's merged context and render it with admin-editable Jinja2 templates."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy import Connection, Engine, Row, bindparam, func, select

from middleware.customers.preferences import BEHAVIOUR, preference_of
from middleware.customers.timeline import (
    ContactFigures,
    Scope,
    answered_by_each,
    contact_figures,
    customer_words,
    history,
    open_items,
)
from middleware.integrations.plugin import Plugin
from middleware.interaction import ORDER_KINDS, ORDER_PROBLEM_STATUSES, channel_word, http_link
from middleware.notes.mood import mood_of
from middleware.notes.template_checks import (
    SAVED_PREFIX,
    TemplateFailure,
    TemplateFailures,
    describe,
    saved_template_in,
    template_line,
)
from middleware.store.documents import DocumentError, DocumentVersions
from middleware.store.tables import customers, identities, interactions, utcnow

DEFAULT_TEMPLATES = Path(__file__).resolve().parent / "templates"
CALL_NOTE_TEMPLATE = "call_note.txt.j2"  # an ended call, on open items in other tools
UPDATE_NOTE_TEMPLATE = "update_note.txt.j2"  # a new ticket, case or message, likewise
EXCERPT_CHARS = 160
SAID_LIMIT = 3
MOOD_SAMPLE = 5
LATELY_DAYS = 30  # "3 contacts in 30 days: phone, email"
# The identity types an agent knows by name, said first in "Recognised by email and phone".
PLAIN_IDENTITIES = ("email", "phone")
# Transfers and notes belong to a call or ticket; the recent contacts list the contacts.
# Orders are purchases, not contacts: they have a section of their own.
LISTED_KINDS = ("ticket", "case", "call", "message", "visit", "survey")
ORDERS_SHOWN = 5
PROBLEM_DAYS = 30  # a refund or cancellation older than this is history, not a problem
# What one operator of an admin-edited template may build: a note is a few KB of text, and a
# template must not be able to stall the worker with "x" * 10**9 or 9 ** 9 ** 9.
MAX_REPEAT = 10_000
MAX_EXPONENT = 64
MAX_POWER_BITS = 4096
MAX_OUTPUT_CHARS = 256 * 1024


@dataclass(frozen=True)
class CustomerContext:
    """Everything Carryover knows about one customer, ready for the API and templates."""

    customer: dict[str, Any]
    open_items: list[dict[str, Any]]
    interactions: list[dict[str, Any]]
    said: list[dict[str, Any]]
    preferred_channels: list[str]
    mood: str | None
    repeat_contacts_7d: int
    candidates: list[dict[str, Any]] = field(default_factory=list)
    contacts_lately: int = 0  # contacts within LATELY_DAYS
    channels_lately: list[str] = field(default_factory=list)  # their channels, most used first
    recognised_by: list[str] = field(default_factory=list)  # identity types, email and phone first
    orders: list[dict[str, Any]] = field(default_factory=list)  # the latest purchases
    # Orders refunded or cancelled within PROBLEM_DAYS, the latest change first.
    order_problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def repeat_contact(self) -> bool:
        """Tell whether the customer came back within 7 days."""
        return self.repeat_contacts_7d >= 2

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the context's own values (shared, not copied: a
        caller that changes one copies it first)."""
        return {name: getattr(self, name) for name in _CONTEXT_FIELDS}


_CONTEXT_FIELDS = tuple(f.name for f in fields(CustomerContext))


def iso(moment: datetime | None) -> str | None:
    """Format a stored (naive UTC) time as ISO-8601 with Z."""
    return moment.isoformat(timespec="seconds") + "Z" if moment else None


def excerpt(text: str | None, limit: int = EXCERPT_CHARS) -> str | None:
    """Shorten text to one line of at most `limit` characters, cut at a word."""
    if not text:
        return None
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 1].rsplit(" ", 1)[0] + "…"


def item_of(row: Row) -> dict[str, Any]:
    """Describe one stored interaction as notes, pops and the context API show it."""
    return {
        "source": row.source,
        "external_id": row.external_id,
        "kind": row.kind,
        "channel": row.channel,
        "direction": row.direction,
        "status": row.status,
        "subject": row.subject,
        "excerpt": excerpt(row.text),
        "occurred_at": iso(row.occurred_at),
        "agent": row.agent,
        "agents": [row.agent] if row.agent else [],  # a call's: everyone who answered it
        "team": row.team,
        "link": http_link(row.link),  # also for links stored before they were checked
        "duration_s": row.duration_s,
        "number": row.number,  # the record's number as agents know it (CaseNumber, ticket id)
        "said_by": row.said_by,  # who wrote the text: customer, agent, or None (unknown)
        "said": _customer_words(row),
        "recording": http_link(row.recording),  # where agents listen to a call's recording
    }


def order_of(row: Row) -> dict[str, Any]:
    """Describe one stored order: an item, when it last changed, and its problem if any."""
    item = item_of(row)
    item["updated_at"] = iso(row.updated_at)
    problem = (row.status or "").lower() in ORDER_PROBLEM_STATUSES
    item["problem"] = (excerpt(row.text) or row.status) if problem else None
    return item


def order_problems(conn: Connection, scope: Scope, since: datetime) -> list[Row]:
    """Return the customer's orders refunded or cancelled since a moment, latest change first."""

    def build(where: list[Any]) -> Any:
        query = select(interactions).where(
            *where,
            interactions.c.kind.in_(ORDER_KINDS),
            func.lower(interactions.c.status).in_(sorted(ORDER_PROBLEM_STATUSES)),
            interactions.c.updated_at >= bindparam("since"),
        )
        order = (interactions.c.updated_at.desc(), interactions.c.id.desc())
        return query.order_by(*order).limit(ORDERS_SHOWN)

    return list(scope.read(conn, "order problems", build, since=since))


def _listed(conn: Connection, rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Describe recent records; a call's item gets `agents`: everyone who answered it,
    transfers included."""
    agents = answered_by_each(conn, [row for row in rows if row.kind == "call"])
    items = [item_of(row) for row in rows]
    for item, row in zip(items, rows, strict=True):
        if row.id in agents:
            item["agents"] = agents[row.id]
    return items


def _customer_words(row: Row) -> str | None:
    """Return what the customer wrote or said in a record, never an agent's text."""
    return excerpt(row.text, 280) if row.said_by == "customer" else None


def recognised_by(types: Sequence[str], system_ids: Collection[str] = ()) -> list[str]:
    """Name the kinds of identity a customer was recognised by, email and phone first.

    A tool's own id of its people (a system id) is left out while anything else was said:
    "email and phone", not "email, phone and crm contact".
    """
    kinds = [t for t in PLAIN_IDENTITIES if t in types]
    kinds += sorted({t for t in types if t not in PLAIN_IDENTITIES})
    shared = [t for t in kinds if t not in system_ids] or kinds
    return [t.replace("_", " ") for t in shared]


_CUSTOMER = select(customers).where(customers.c.id == bindparam("customer_id"))
_IDENTITIES = (
    select(identities)
    .where(identities.c.customer_id == bindparam("customer_id"))
    .order_by(identities.c.id)
)


def build_context(
    conn: Connection,
    customer_id: int,
    recent_limit: int = 10,
    exclude_thread: tuple[str, str] | None = None,
    now: datetime | None = None,
    mood: bool = True,
    *,
    history_outside: bool = True,
) -> CustomerContext:
    """Gather who the customer is, open items, recent contacts, orders and their problems,
    words, channel and mood.

    With mood false (`summary.mood` off) the mood is None. A caller that knows the customer
    has no record outside `exclude_thread` (a first contact) says so with `history_outside`
    false: the timeline is then not read, since every part of it would come back empty.
    """
    now = now or utcnow()
    person = conn.execute(_CUSTOMER, {"customer_id": customer_id}).one()
    ids = conn.execute(_IDENTITIES, {"customer_id": customer_id}).all()
    explicit = preference_of(person)
    preferred = list(explicit.channels) if explicit else []
    source = explicit.source if explicit else BEHAVIOUR
    recent: list[Row] = []
    texts: list[Row] = []
    orders: list[Row] = []
    problems: list[Row] = []
    items: list[Row] = []
    figures = ContactFigures(channels=[], channels_lately=[], since_week=0, lately=0)
    if history_outside:
        where = Scope(customer_id, exclude_thread)
        recent = history(conn, customer_id, recent_limit, exclude_thread, kinds=LISTED_KINDS)
        figures = contact_figures(conn, where, now - timedelta(days=7),
                                  now - timedelta(days=LATELY_DAYS))  # fmt: skip
        texts = customer_words(conn, where, max(SAID_LIMIT, MOOD_SAMPLE))
        orders = history(conn, customer_id, ORDERS_SHOWN, exclude_thread, kinds=ORDER_KINDS)
        problems = order_problems(conn, where, now - timedelta(days=PROBLEM_DAYS))
        items = open_items(conn, where)
    preferred = preferred or figures.channels[:2]
    return CustomerContext(
        customer={
            "id": person.id,
            "name": person.name,
            "identities": [
                {"type": i.type, "value": i.value, "shared": i.shared, "linked_by": i.caused_by}
                for i in ids
            ],
            "preferred_channels": preferred,
            # survey, admin or behaviour (the most used channels): see customers/preferences.py
            "preferred_channels_source": source,
        },
        open_items=[item_of(r) for r in items],
        interactions=_listed(conn, recent),
        said=[
            {
                "occurred_at": iso(r.occurred_at),
                "channel": r.channel,
                "source": r.source,
                "text": excerpt(r.text, 280),
            }
            for r in texts[:SAID_LIMIT]
        ],
        preferred_channels=preferred,
        mood=mood_of([r.text for r in texts[:MOOD_SAMPLE]]) if mood else None,
        repeat_contacts_7d=figures.since_week,
        contacts_lately=figures.lately,
        channels_lately=figures.channels_lately,
        recognised_by=[i.type for i in ids],
        orders=[order_of(r) for r in orders],
        order_problems=[order_of(r) for r in problems],
    )


def when(value: str | datetime | None, zone: ZoneInfo, now: datetime, relative: bool = True) -> str:
    """Say a time as an agent reads it, in the zone: "Mon 3 Dec 14:05 (2 days ago)".

    `value` is an ISO time (a naive one is UTC); `now` is the moment of rendering. The year
    is said only when it is not the current one; `relative=False` leaves out "(… ago)".
    """
    moment = _moment(value)
    if moment is None:
        return ""
    local, today = moment.astimezone(zone), _aware(now).astimezone(zone)
    year = f" {local.year}" if local.year != today.year else ""
    stamp = f"{local:%a} {local.day} {local:%b}{year} {local:%H:%M}"
    if not relative:
        return stamp
    return f"{stamp} ({ago((today.date() - local.date()).days)})"


def ago(days: int) -> str:
    """Say how many calendar days back a day is: "today", "yesterday", "3 weeks ago"."""
    if days < 0:
        return "tomorrow" if days == -1 else f"in {-days} days"
    if days < 2:
        return ("today", "yesterday")[days]
    for least, size, unit in ((365, 365, "year"), (60, 30, "month"), (14, 7, "week")):
        if days >= least:
            count = days // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return f"{days} days ago"


def _moment(value: str | datetime | None) -> datetime | None:
    if isinstance(value, datetime):
        return _aware(value)
    if not value or not isinstance(value, str):
        return None
    try:
        return _aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def duration(seconds: int | float | None) -> str:
    """Say a duration: "45 s", "4 min 32 s", "1 h 5 min"."""
    if not seconds:
        return "0 s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def and_list(values: Sequence[Any]) -> str:
    """Join words as a sentence does: "email", "email and phone", "a, b and c"."""
    words = [str(v) for v in values if v]
    return " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1]


class NoteTemplates(ImmutableSandboxedEnvironment):
    """The sandbox that admin-edited templates render in: only the variables given to them.

    Jinja's sandbox refuses attributes that reach Python's internals (`__globals__`,
    `mro`, …) and calls of unsafe methods; on top of it, templates see no globals at all
    (no `range`, `cycler`, `lipsum`, `namespace`), and `*` and `**` cannot build huge values.
    """

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, loader: jinja2.BaseLoader) -> None:
        super().__init__(
            loader=loader,
            autoescape=False,  # plain-text notes, never HTML
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            undefined=jinja2.StrictUndefined,
        )
        self.globals.clear()
        self.zone = ZoneInfo("UTC")
        self.clock: Callable[[], datetime] = utcnow
        self.filters["when"] = lambda value, relative=True: when(
            value, self.zone, self.clock(), relative
        )
        self.filters["excerpt"] = excerpt
        self.filters["duration"] = duration
        self.filters["and_list"] = and_list
        self.filters["channel"] = channel_word  # "in person", not in_person

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Repeat a string or list at most MAX_REPEAT times; compute only small powers."""
        if operator == "**" and _huge_power(left, right):
            raise SecurityError("a template may not compute such a large power")
        if operator == "*" and (_huge_repeat(left, right) or _huge_repeat(right, left)):
            raise SecurityError(f"a template may not repeat a value over {MAX_REPEAT} times")
        return super().call_binop(context, operator, left, right)


def _huge_power(base: Any, exponent: Any) -> bool:
    if not isinstance(exponent, int | float):
        return False
    if abs(exponent) > MAX_EXPONENT:
        return True
    return isinstance(base, int) and base.bit_length() * abs(exponent) > MAX_POWER_BITS


def _huge_repeat(value: Any, count: Any) -> bool:
    return isinstance(value, str | list | tuple) and isinstance(count, int) and count > MAX_REPEAT


def render_bounded(template: jinja2.Template, values: dict[str, Any]) -> str:
    """Render a template, refusing one whose output grows past MAX_OUTPUT_CHARS."""
    chunks, size = [], 0
    for chunk in template.generate(**values):
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise SecurityError(f"the template wrote over {MAX_OUTPUT_CHARS} characters")
        chunks.append(chunk)
    return "".join(chunks).strip()


class SummaryRenderer:
    """Render contexts with one template per target; admins may override any of them.

    A template is looked up in the versions saved in the admin UI, then in templates_dir,
    then among the shipped ones: the core's, then each plugin's own (plugins/<key>/templates).
    Every template renders in the sandbox (NoteTemplates): a saved one is written by an
    admin in the browser, a file one by whoever can write there. Times are said in
    `timezone` against `now` (the clock, fixed in tests); `records` names each record and
    gives its URL by its plugin's rules (the registry's describe_record); `system_ids` are
    the identity types the identity line leaves out when it has others to name.
    """

    def __init__(
        self,
        override_dir: Path | None = None,
        engine: Engine | None = None,
        plugin_folders: Sequence[Path] = (),
        timezone: str = "UTC",
        now: Callable[[], datetime] | None = None,
        records: Callable[[dict[str, Any]], tuple[str, str | None]] | None = None,
        system_ids: Collection[str] = (),
    ) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if override_dir is not None:
            loaders.append(jinja2.FileSystemLoader(str(override_dir)))
        loaders.append(jinja2.FileSystemLoader(str(DEFAULT_TEMPLATES)))
        loaders += [jinja2.FileSystemLoader(str(folder)) for folder in plugin_folders]
        self.files = jinja2.ChoiceLoader(loaders)
        self.env = NoteTemplates(self.files)
        self.env.zone = ZoneInfo(timezone)
        self.env.clock = now or utcnow
        self.records = records or _neutral_record
        self.system_ids = frozenset(system_ids)
        # What writes a note when a saved version fails: the same sandbox and filters, files only.
        self.shipped = self.env.overlay(loader=self.files)
        self.failures = TemplateFailures()
        self.saved: DocumentVersions[str] | None = None
        if engine is not None:
            names = [n for n in self.files.list_templates() if n.endswith(".txt.j2")]
            self.saved = DocumentVersions(engine, "template", names, self.file_source,
                                          self.check_source)  # fmt: skip
            self.env.loader = _VersionedLoader(self.saved, self.files)

    def file_source(self, name: str) -> str:
        """Return a template's text as the files give it (templates_dir, else shipped)."""
        return self.files.get_source(self.env, name)[0]

    def check_source(self, name: str, source: str, origin: str) -> str:
        """Return a template's text if Jinja can compile it; raise DocumentError otherwise."""
        try:
            self.env.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise DocumentError(f"{origin}: line {exc.lineno}: {exc.message}", exc.lineno) from None
        return source

    def render(self, target: str, context: CustomerContext, **extra: Any) -> str:
        """Render the template `<target>.txt.j2` for a customer context."""
        return self._render(f"{target}.txt.j2", {**self.variables(context), **extra})

    def render_call(self, call: dict[str, Any], customer_name: str | None = None) -> str:
        """Render the note about one ended call (call_note.txt.j2)."""
        return self._render(CALL_NOTE_TEMPLATE, self.call_variables(call, customer_name))

    def call_variables(self, call: dict[str, Any], customer_name: str | None) -> dict[str, Any]:
        """Return the variables a call note template sees."""
        return {"call": call, "customer_name": customer_name}

    def render_update(self, item: dict[str, Any], tool: str, customer_name: str | None) -> str:
        """Render the update note about a new ticket, case or message (update_note.txt.j2);
        `item` is named (see named), `tool` the title of the tool it happened in."""
        return self._render(UPDATE_NOTE_TEMPLATE, update_variables(item, tool, customer_name))

    def preview(self, name: str, source: str, values: dict[str, Any]) -> str:
        """Render a template text being edited with the given variables; DocumentError if bad."""
        try:
            return render_bounded(self.env.from_string(self.check_source(name, source, name)),
                                  values)  # fmt: skip
        except DocumentError:
            raise
        except Exception as exc:  # any way a template fails is a reason not to save it
            line = template_line(exc.__traceback__, "<template>")
            raise DocumentError(f"{name}: {describe(exc, line)}", line) from None

    def variables(self, context: CustomerContext) -> dict[str, Any]:
        """Return the variables a summary template sees for a customer context."""
        values = {**context.as_dict(), "repeat_contact": context.repeat_contact}
        values["recognised_by"] = recognised_by(context.recognised_by, self.system_ids)
        for name in ("open_items", "interactions", "orders", "order_problems"):
            values[name] = [self.named(item) for item in values[name]]
        listed = {(i["source"], i["external_id"]) for i in values["open_items"]}
        for item in values["interactions"]:  # said once, under its open item
            item["open"] = (item["source"], item["external_id"]) in listed
        return values

    def named(self, item: dict[str, Any]) -> dict[str, Any]:
        """Return an item with `label` (its name for agents) and `url` (http(s) or None)."""
        label, url = self.records(item)
        return {**item, "label": label, "url": http_link(url) or item.get("link")}

    def failure(self, name: str) -> TemplateFailure | None:
        """Return how the version of a template in use failed, if it did in this process."""
        return self.failures.of(name, self.saved.version_of(name) if self.saved else None)

    def _render(self, name: str, values: dict[str, Any]) -> str:
        """Render a template; if a saved version fails, record it and render the shipped one."""
        try:
            return render_bounded(self._template(name), values)
        except Exception as exc:  # an admin's template may fail in any way: never block a note
            failed = saved_template_in(exc.__traceback__)
            if failed is None and self.saved is not None and self.saved.version_of(name):
                failed = (name, None)  # failed outside its code: wrote too much
            if failed is None or self.saved is None:
                raise  # the shipped templates failed: nothing to fall back to
            self.failures.record(failed[0], self.saved.version_of(failed[0]),
                                 describe(exc, failed[1]), utcnow())  # fmt: skip
        return render_bounded(self.shipped.get_template(name), values)

    def _template(self, name: str) -> jinja2.Template:
        if self.saved is not None:
            self.saved.refresh_if_due()
        return self.env.get_template(name)


def update_variables(item: dict[str, Any], tool: str, customer_name: str | None) -> dict[str, Any]:
    """Return the variables an update note template sees: the new record (`item`, named),
    `record` (what agents call it, with its tool: "Salesforce case 00001001", "Zendesk
    ticket #2"), `tool` and `customer_name`."""
    label, kind = str(item.get("label") or ""), str(item.get("kind") or "")
    named = label if not kind or label.startswith(kind) else f"{kind} {label}"
    return {"item": item, "record": f"{tool} {named}", "tool": tool,
            "customer_name": customer_name}  # fmt: skip


def _neutral_record(item: dict[str, Any]) -> tuple[str, str | None]:
    return Plugin.record_label(item), None


class _VersionedLoader(jinja2.BaseLoader):
    """Load a template saved in the admin UI, else its file; recompile when either changes.

    Jinja keeps a compiled template while its `uptodate` says so. A file's own check looks
    at the file's time only, so a version saved later (in this process or another) must
    also make the file's template out of date, and a rollback to the file likewise.
    """

    def __init__(self, saved: DocumentVersions[str], files: jinja2.BaseLoader) -> None:
        self.saved = saved
        self.files = files

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool]]:
        """Return the text in use for a template, and how to tell it is still in use."""
        version = self.saved.version_of(template)
        if version is not None:
            return (
                self.saved.current(template),
                f"{SAVED_PREFIX}{template}>",  # names the template in a traceback
                lambda: self.saved.version_of(template) == version,
            )
        source, filename, file_uptodate = self.files.get_source(environment, template)
        return (
            source,
            filename,
            lambda: (
                self.saved.version_of(template) is None
                and (file_uptodate is None or file_uptodate())
            ),
        )
