"""The mapping engine: admin-editable YAML that turns a payload into canonical interactions.

A mapping file has two parts:

    tables:                       # named lookup tables, "*" is the fallback
      channels: {mail: email, web_form: web, "*": other}
    events:                       # one entry per event type the plugin reports
      ticket.created:
        creates: true             # announces a new ticket or case (may get a summary note)
        interaction:
          kind: ticket            # a plain value is a literal
          external_id: {path: detail.id, required: true}
          channel: {path: detail.via.channel, table: channels}
          status: {path: detail.status, lower: true}
          subject: {format: "{detail.subject} ({detail.id})"}
          identities:
            zendesk_user: {path: detail.requester_id}

A value spec is a literal, or a mapping with one of `path` (dotted, list items by number),
`format` (a string with {dotted.path} placeholders) or `first` (a list of specs, the first
that yields a value), and the options `table`, `lower`, `default`, `required`, `equals`. A
table entry that maps to "" means "no value", so `first` goes on to its next spec. An identity
may take a list of specs (e.g. a contact's Phone and MobilePhone), each adding one identifier.

`equals: other.path` compares the value with the one at another path and yields "true" or
"false" (nothing when either is missing), which a table then names; it is how a mapping
tells who wrote a text:

    said_by: {path: event.comment.author.id, equals: detail.requester_id, table: authors}
    # with  tables: {authors: {"true": customer, "false": agent}}

A list of items (a chat's messages) becomes one value with `where` (keep the items whose
fields have these values), `pick` (a dotted path inside each kept item) and `join` (the text
that separates the picked values; without it the value is the list). Each item is looked at
once, so a long list costs its length; it is how a mapping keeps only the customer's lines:

    text: {path: data.messages, where: {from: customer}, pick: text, join: "\n"}

`preferred_channels` names the channels a customer said they prefer (a list, or a text of
names separated by commas); the pipeline sets them on the customer and drops names that are
not channels, saying so in the delivery's trail.

A value that depends on another field is a table too (the case's Origin: web and email
descriptions are the customer's, any other origin an agent's):

    said_by: {path: sObject.Origin, table: case_authors}

`number` is the record's number as agents know it (a CaseNumber, a ticket id); `said_by` is
who wrote `text`: "customer", "agent", or nothing when the payload does not tell. Only the
customer's own texts count as what they already said. `recording` is where agents listen to
a call's recording (an http(s) link; any other value is dropped); a PBX's mapping may set it,
and `text` with `said_by: customer` for what the caller said.

An event that describes who a customer is rather than a contact with them (a Salesforce
Contact) has `customer:` instead of `interaction:`, with `external_id`, `customer_name` and
`identities`: its identifiers are linked as one trusted record, and nothing enters the
timeline.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from middleware.interaction import (
    AUTHORS,
    CHANNELS,
    DIRECTIONS,
    KINDS,
    CustomerRecord,
    Identity,
    Interaction,
    http_link,
)
from middleware.process.yaml_problems import yaml_problem

FIELDS = {
    "kind", "external_id", "channel", "direction", "occurred_at", "updated_at", "status",
    "subject", "text", "customer_name", "agent", "team", "link", "duration_s", "identities",
    "number", "said_by", "preferred_channels", "recording",
}  # fmt: skip
REQUIRED_FIELDS = ("kind", "external_id")
CUSTOMER_FIELDS = {"external_id", "customer_name", "identities"}
RECORD_KINDS = ("interaction", "customer")
SPEC_KEYS = {
    "path", "format", "first", "table", "lower", "default", "required", "value", "equals",
    "where", "pick", "join",
}  # fmt: skip
VOCABULARIES = {"kind": KINDS, "channel": CHANNELS, "direction": DIRECTIONS, "said_by": AUTHORS}
PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.\-]+)\}")
FRACTION = re.compile(r"(\.\d{6})\d+")
# What the store's columns hold (middleware/store/tables.py): an id longer than this is refused,
# a name or status is cut. An id must leave room in record_ref ("source:kind:id", 255).
MAX_EXTERNAL_ID = 200
SHORT_TEXT = {"status": 32, "customer_name": 255, "agent": 255, "team": 255, "number": 64}
MAX_SECONDS = 2**31 - 1  # an INTEGER column
EPOCH_RANGE = (0, 253402300799)  # 1970 to 9999: what a datetime holds


class MappingError(ValueError):
    """A mapping file is invalid, or does not fit a payload; the message names the path.

    `line` and `column` (from 1) place a YAML syntax error in the text, for an editor to mark.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line, self.column = line, column


@dataclass(frozen=True)
class EventMapping:
    """How one event type becomes an interaction."""

    event_type: str
    creates: bool
    fields: Mapping[str, Any]
    record: str = "interaction"  # or "customer": a record of who someone is (RECORD_KINDS)


@dataclass(frozen=True)
class PluginMapping:
    """A validated mapping file of one plugin."""

    source: str
    tables: Mapping[str, Mapping[str, str]]
    events: Mapping[str, EventMapping]

    def handles(self, event_type: str) -> bool:
        """Tell whether the mapping turns this event type into an interaction."""
        return event_type in self.events

    def describes_customer(self, event_type: str) -> bool:
        """Tell whether the event is a customer record rather than an interaction."""
        return self.events[event_type].record == "customer"

    def apply_customer(self, event_type: str, payload: Mapping[str, Any]) -> CustomerRecord:
        """Map one event's payload to a customer record (identifiers that belong together)."""
        mapping = self.events[event_type]
        where = f"events.{event_type}.customer"
        external_id = self._evaluate(mapping.fields["external_id"], payload, f"{where}.external_id")
        if external_id in (None, ""):
            raise MappingError(f"{where}.external_id: no value in the payload")
        name = self._evaluate(mapping.fields.get("customer_name"), payload,
                              f"{where}.customer_name")  # fmt: skip
        kind = event_type.split(".")[0]
        external_id = _external_id(external_id, f"{where}.external_id")
        return CustomerRecord(
            source=self.source,
            external_id=external_id,
            record_ref=f"{self.source}:{kind}:{external_id}",
            customer_name=_text(name, SHORT_TEXT["customer_name"]),
            identities=self._identities(mapping, payload, where),
        )

    def apply(
        self, event_type: str, payload: Mapping[str, Any], received_at: datetime
    ) -> Interaction:
        """Map one event's payload to a canonical interaction."""
        mapping = self.events[event_type]
        where = f"events.{event_type}.interaction"
        values: dict[str, Any] = {}
        for name, spec in mapping.fields.items():
            if name == "identities":
                continue
            values[name] = self._evaluate(spec, payload, f"{where}.{name}")
        identities = self._identities(mapping, payload, where)
        for name in REQUIRED_FIELDS:
            if values.get(name) in (None, ""):
                raise MappingError(f"{where}.{name}: no value in the payload")
        kind = str(values["kind"])
        if kind not in KINDS:
            raise MappingError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
        channel = str(values.get("channel") or "other")
        if channel not in CHANNELS:
            raise MappingError(f"{where}.channel: {channel!r} is not one of {', '.join(CHANNELS)}")
        direction = values.get("direction")
        if direction is not None and direction not in DIRECTIONS:
            raise MappingError(f"{where}.direction: {direction!r} is not one of {DIRECTIONS}")
        said_by = values.get("said_by")
        if said_by is not None and said_by not in AUTHORS:
            raise MappingError(f"{where}.said_by: {said_by!r} is not one of {', '.join(AUTHORS)}")
        occurred = _datetime(values.get("occurred_at"), f"{where}.occurred_at") or received_at
        updated = _datetime(values.get("updated_at"), f"{where}.updated_at") or occurred
        external_id = _external_id(values["external_id"], f"{where}.external_id")
        short = {name: _text(values.get(name), limit) for name, limit in SHORT_TEXT.items()}
        return Interaction(
            source=self.source,
            external_id=external_id,
            kind=kind,
            channel=channel,
            direction=direction,
            occurred_at=occurred,
            updated_at=updated,
            record_ref=f"{self.source}:{kind}:{external_id}",
            status=short["status"],
            subject=_text(values.get("subject")),
            text=_text(values.get("text")),
            identities=identities,
            customer_name=short["customer_name"],
            agent=short["agent"],
            team=short["team"],
            link=http_link(_text(values.get("link"))),
            duration_s=_integer(values.get("duration_s"), f"{where}.duration_s"),
            creates=mapping.creates,
            number=short["number"],
            said_by=said_by,
            preferred_channels=_names(values.get("preferred_channels")),
            recording=http_link(_text(values.get("recording"))),
        )

    def record_ref(self, event_type: str, payload: Mapping[str, Any]) -> str | None:
        """Return the record an event is about ("zendesk:ticket:5149"), or None if unclear.

        Two fields of the payload only, so that a delivery can be named in the log when it is
        accepted; the full mapping runs later, in the worker.
        """
        mapping = self.events.get(event_type)
        if mapping is None:
            return None
        try:
            if mapping.record == "customer":
                kind: Any = event_type.split(".")[0]
            else:
                kind = self._evaluate(mapping.fields.get("kind"), payload, "kind")
            found = self._evaluate(mapping.fields.get("external_id"), payload, "external_id")
            external_id = _external_id(found, "external_id")
        except (MappingError, LookupError, TypeError, ValueError):
            return None
        if mapping.record != "customer" and kind not in KINDS:
            return None
        return f"{self.source}:{kind}:{external_id}"

    def _identities(
        self, mapping: EventMapping, payload: Mapping[str, Any], where: str
    ) -> tuple[Identity, ...]:
        found = []
        for id_type, specs in (mapping.fields.get("identities") or {}).items():
            for i, spec in enumerate(specs if isinstance(specs, list) else [specs]):
                at = f"{where}.identities.{id_type}" + (f"[{i}]" if isinstance(specs, list) else "")
                raw = self._evaluate(spec, payload, at)
                for item in raw if isinstance(raw, list) else [raw]:
                    value = _text(item)
                    if value:
                        found.append(Identity(id_type, value))
        return tuple(dict.fromkeys(found))

    def _evaluate(self, spec: Any, payload: Mapping[str, Any], where: str) -> Any:
        if not isinstance(spec, dict):
            return spec
        if "value" in spec:
            value = spec["value"]
        elif "path" in spec:
            value = lookup(payload, spec["path"])
        elif "format" in spec:
            parts = {m: lookup(payload, m) for m in PLACEHOLDER.findall(spec["format"])}
            if any(v in (None, "") for v in parts.values()):
                value = None
            else:
                value = PLACEHOLDER.sub(lambda m: str(parts[m.group(1)]), spec["format"])
        else:
            value = None
            for i, option in enumerate(spec["first"]):
                value = self._evaluate(option, payload, f"{where}.first[{i}]")
                if value not in (None, ""):
                    break
        if isinstance(value, list) and ("where" in spec or "pick" in spec or "join" in spec):
            value = _items(value, spec)
        if "equals" in spec:
            other = lookup(payload, spec["equals"])
            if value in (None, "") or other in (None, "") or isinstance(value, (list, dict)):
                value = None
            else:
                value = "true" if str(value) == str(other) else "false"
        if value in (None, ""):
            if spec.get("required"):
                shown = spec.get("path") or spec.get("format") or "first"
                raise MappingError(f"{where}: required value missing at {shown}")
            value = spec.get("default")
        if value is None:
            return None
        if spec.get("lower") and isinstance(value, str):
            value = value.lower()
        if "table" in spec and not isinstance(value, (list, dict)):
            table = self.tables[spec["table"]]
            value = table.get(str(value).lower(), table.get("*", value))
        return None if value == "" else value


def lookup(payload: Any, path: str) -> Any:
    """Follow a dotted path through dicts and lists; None when any step is missing."""
    current = payload
    for step in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(step)
        elif isinstance(current, list) and step.isdigit() and int(step) < len(current):
            current = current[int(step)]
        else:
            return None
    return current


def _items(items: list[Any], spec: Mapping[str, Any]) -> Any:
    """Keep the items that match `where`, take `pick` of each, and `join` them if asked."""
    wanted = {str(k): str(v) for k, v in (spec.get("where") or {}).items()}
    picked = []
    for item in items:
        if wanted and not (
            isinstance(item, Mapping) and all(str(item.get(k)) == v for k, v in wanted.items())
        ):
            continue
        found = lookup(item, spec["pick"]) if "pick" in spec else item
        if found not in (None, "") and not isinstance(found, dict | list):
            picked.append(str(found))
    if "join" in spec:
        return str(spec["join"]).join(picked) or None
    return picked or None


def _names(value: Any) -> tuple[str, ...] | None:
    """Return channel names as given (a list, or a text separated by commas), lower-case."""
    if value in (None, ""):
        return None
    raw = value if isinstance(value, list) else str(value).split(",")
    names = (_text(v) for v in raw if not isinstance(v, dict | list))
    return tuple(dict.fromkeys(n.strip().lower()[:32] for n in names if n and n.strip()))


def _text(value: Any, limit: int | None = None) -> str | None:
    """Return a value as text the store can hold: no NUL, no lone surrogate, cut at limit."""
    if value is None or isinstance(value, dict | list):
        return None
    text = value if isinstance(value, str) else str(value)
    if not text.isascii():
        # A JSON escape can make a lone surrogate ("\ud800"), which no store can encode.
        text = text.encode("utf-8", "replace").decode("utf-8")
    text = text.replace("\x00", "")
    return text[:limit] if limit else text


def _external_id(value: Any, where: str) -> str:
    """Return a record's id as text; refuse one no upstream would give."""
    text = _text(value)
    if not text or len(text) > MAX_EXTERNAL_ID or not text.isprintable():
        shown = repr(text)[:60] if text else "nothing"
        raise MappingError(f"{where}: {shown} is not an id (1 to {MAX_EXTERNAL_ID} printable "
                           "characters)")  # fmt: skip
    return text


def _integer(value: Any, where: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise MappingError(f"{where}: {str(value)[:60]!r} is not a number") from None
    if not math.isfinite(number) or not 0 <= number <= MAX_SECONDS:
        raise MappingError(f"{where}: {str(value)[:60]!r} is out of range")
    return int(number)


def _datetime(value: Any, where: str) -> datetime | None:
    if value in (None, ""):
        return None
    shown = repr(str(value)[:60])
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, bool):
        raise MappingError(f"{where}: {shown} is not a date and time")
    elif isinstance(value, int | float) or (
        isinstance(value, str) and value.isascii() and value.isdigit()
    ):
        seconds = float(value) if len(str(value)) < 20 else math.inf
        if not (math.isfinite(seconds) and EPOCH_RANGE[0] <= seconds <= EPOCH_RANGE[1]):
            raise MappingError(f"{where}: {shown} is not a time (seconds since 1970)")
        parsed = datetime.fromtimestamp(seconds, UTC)
    else:
        text = FRACTION.sub(r"\1", str(value).strip())
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError, OverflowError):
                raise MappingError(f"{where}: {shown} is not a date and time") from None
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # 9999-12-31T23:00:00-05:00 is past what a datetime holds
            raise MappingError(f"{where}: {shown} is out of range") from None
    return parsed


def _check_spec(spec: Any, where: str, tables: Mapping[str, Any]) -> None:
    if not isinstance(spec, dict):
        if isinstance(spec, (list, set)):
            raise MappingError(f"{where}: expected a value or a mapping with path/format/first")
        return
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise MappingError(f"{where}.{sorted(unknown)[0]}: unknown option")
    sources = [k for k in ("path", "format", "first", "value") if k in spec]
    if len(sources) != 1:
        raise MappingError(f"{where}: give exactly one of path, format, first or value")
    if "path" in spec and not isinstance(spec["path"], str):
        raise MappingError(f"{where}.path: expected a dotted path")
    if "format" in spec and not isinstance(spec["format"], str):
        raise MappingError(f"{where}.format: expected a string")
    if "first" in spec:
        if not isinstance(spec["first"], list) or not spec["first"]:
            raise MappingError(f"{where}.first: expected a non-empty list")
        for i, option in enumerate(spec["first"]):
            _check_spec(option, f"{where}.first[{i}]", tables)
    if "equals" in spec and not isinstance(spec["equals"], str):
        raise MappingError(f"{where}.equals: expected a dotted path")
    if "where" in spec and not (
        isinstance(spec["where"], dict)
        and all(not isinstance(v, dict | list) for v in spec["where"].values())
    ):
        raise MappingError(f"{where}.where: expected a mapping of field names to values")
    if "pick" in spec and not isinstance(spec["pick"], str):
        raise MappingError(f"{where}.pick: expected a dotted path")
    if "join" in spec and not isinstance(spec["join"], str):
        raise MappingError(f"{where}.join: expected a string")
    if "table" in spec and spec["table"] not in tables:
        raise MappingError(f"{where}.table: unknown table {spec['table']!r}")


def _check_vocabulary(
    name: str, spec: Any, where: str, tables: Mapping[str, Mapping[str, str]]
) -> None:
    """Refuse a kind, channel or direction that can never be canonical, before any payload."""
    vocabulary = VOCABULARIES.get(name)
    if vocabulary is None:
        return
    if not isinstance(spec, dict):
        literals = [] if spec is None else [(where, spec)]
    else:
        literals = [(f"{where}.{k}", spec[k]) for k in ("value", "default") if spec.get(k)]
        if spec.get("table") in tables:
            table = tables[spec["table"]]
            literals += [(f"{where}.table ({spec['table']}.{k})", v) for k, v in table.items()]
        for i, option in enumerate(spec.get("first") or []):
            _check_vocabulary(name, option, f"{where}.first[{i}]", tables)
    for path, value in literals:
        if value not in vocabulary and value != "":  # "" in a table: no value
            raise MappingError(f"{path}: {value!r} is not one of {', '.join(vocabulary)}")


def _check_identities(spec: Any, where: str, tables: Mapping[str, Any]) -> None:
    if not isinstance(spec, dict):
        raise MappingError(f"{where}: expected a mapping")
    for id_type, id_spec in spec.items():
        if isinstance(id_spec, list):
            if not id_spec:
                raise MappingError(f"{where}.{id_type}: expected a non-empty list")
            for i, option in enumerate(id_spec):
                _check_spec(option, f"{where}.{id_type}[{i}]", tables)
        else:
            _check_spec(id_spec, f"{where}.{id_type}", tables)


def parse_mapping(source: str, raw: Any, origin: str = "mapping") -> PluginMapping:
    """Validate a mapping document; errors name the failing path."""
    if not isinstance(raw, dict):
        raise MappingError(f"{origin}: expected a mapping with 'events'")
    unknown = set(raw) - {"tables", "events"}
    if unknown:
        raise MappingError(f"{origin}: {sorted(unknown)[0]}: unknown key (expected tables, events)")
    tables = raw.get("tables") or {}
    if not isinstance(tables, dict):
        raise MappingError(f"{origin}: tables: expected a mapping")
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise MappingError(f"{origin}: tables.{name}: expected a mapping")
    lowered = {
        name: {str(k).lower(): str(v) for k, v in table.items()} for name, table in tables.items()
    }
    events_raw = raw.get("events")
    if not isinstance(events_raw, dict) or not events_raw:
        raise MappingError(f"{origin}: events: expected a mapping of event types")
    events = {}
    for event_type, entry in events_raw.items():
        where = f"{origin}: events.{event_type}"
        records = [k for k in RECORD_KINDS if isinstance(entry, dict) and k in entry]
        if len(records) != 1 or not isinstance(entry[records[0]], dict):
            raise MappingError(f"{where}: expected a mapping with 'interaction' (or 'customer')")
        record = records[0]
        extra = set(entry) - {record, "creates"}
        if extra:
            raise MappingError(f"{where}.{sorted(extra)[0]}: unknown key")
        fields = entry[record]
        known, required = (
            (FIELDS, REQUIRED_FIELDS)
            if record == "interaction"
            else (CUSTOMER_FIELDS, ("external_id",))
        )
        for name in fields:
            if name not in known:
                raise MappingError(f"{where}.{record}.{name}: unknown field")
        for name in required:
            if name not in fields:
                raise MappingError(f"{where}.{record}.{name}: required")
        for name, spec in fields.items():
            if name == "identities":
                _check_identities(spec, f"{where}.{record}.identities", lowered)
            else:
                _check_spec(spec, f"{where}.{record}.{name}", lowered)
                _check_vocabulary(name, spec, f"{where}.{record}.{name}", lowered)
        events[str(event_type)] = EventMapping(
            str(event_type), bool(entry.get("creates")), fields, record
        )
    return PluginMapping(source=source, tables=lowered, events=events)


def load_mapping(source: str, path: Path) -> PluginMapping:
    """Read and validate mappings/<source>.yaml."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"{path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise not_yaml(str(path), exc) from exc
    return parse_mapping(source, raw, origin=str(path))


def not_yaml(origin: str, exc: yaml.YAMLError) -> MappingError:
    """Return the error of a mapping text that is not YAML, in plain words and placed."""
    problem = yaml_problem(exc)
    said = f"at {problem}" if problem.line else f"({problem})"
    return MappingError(f"{origin}: not valid YAML {said}", problem.line, problem.column)
