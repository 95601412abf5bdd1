"""The mapping engine: shipped mappings fit every fixture, and errors name the failing path."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from middleware.cli import main
from middleware.config import Config, validate_section
from middleware.errors import UnsupportedEvent
from middleware.integrations.plugin import Capability, InboundRequest, Plugin
from middleware.integrations.registry import PluginRegistry
from middleware.interaction import CHANNELS, DIRECTIONS, KINDS, Identity
from middleware.process.mapping import MappingError, PluginMapping, load_mapping, parse_mapping
from tests.payloads import fixture_bytes

MAPPINGS = Config().mappings_dir
RECEIVED = datetime(2025, 2, 1, 12, 0, 0)
CLASSES = PluginRegistry.from_entry_points().classes
PLUGINS = sorted(CLASSES)
DUMMY = {str: "https://example.com", int: 1, float: 1.0, bool: False, list: []}
# Settings that a placeholder cannot stand for (the org id is checked when the plugin starts).
VALID_SETTINGS = {
    "salesforce": {
        "organization_id": "00D70000000IVNp",
        "instance_url": "https://acme.my.salesforce.com",
        "session_id": "placeholder",
    },
    # Placetel needs a shared secret or a path token, either one.
    "placetel": {"secret": "placeholder"},
}


def plugin_instance(key: str) -> Plugin:
    """Build a plugin with placeholder values for its required settings (no network used)."""
    cls = CLASSES[key]
    raw = {name: DUMMY[s.type] for name, s in cls.settings.items() if s.required}
    raw.update(VALID_SETTINGS.get(key, {}))
    return cls(validate_section(f"integrations.{key}", raw, cls.settings), Config())


def fixture_request(path: Path) -> InboundRequest:
    """Wrap a fixture file as an inbound delivery, with the headers its sender adds."""
    headers = CLASSES[path.parent.parent.name].fixture_headers(path)
    return InboundRequest(path="/hooks/fixture", url="", headers=headers, body=path.read_bytes())


def fixtures_of(key: str) -> list[Path]:
    """Return a plugin's fixture files (FIXTURES.md beside the folder cites their sources)."""
    return sorted((CLASSES[key].folder() / "fixtures").glob("*.*"))


def shipped(key: str) -> PluginMapping:
    """Load the shipped default mapping of a plugin."""
    return load_mapping(key, MAPPINGS / f"{key}.yaml")


def zendesk_mapping_raw() -> dict[str, Any]:
    """Return the shipped Zendesk mapping as a raw document to edit."""
    return yaml.safe_load((MAPPINGS / "zendesk.yaml").read_text(encoding="utf-8"))


def created_with(**detail: Any) -> dict[str, Any]:
    """Return the mail ticket.created fixture with some detail fields replaced."""
    payload = json.loads(fixture_bytes("ticket_created__mail.json"))
    payload["detail"].update(detail)
    return payload


# -- the contract every plugin keeps ---------------------------------------------------------


def test_at_least_one_plugin_is_registered():
    """The contract tests below walk real plugins: Zendesk is installed."""
    assert "zendesk" in PLUGINS


@pytest.mark.parametrize("key", PLUGINS)
def test_shipped_mapping_validates_and_only_names_declared_events(key):
    """mappings/<key>.yaml validates, and maps only event types the plugin declares."""
    mapping = shipped(key)
    assert mapping.source == key
    assert mapping.events
    assert set(mapping.events) <= set(CLASSES[key].event_types + CLASSES[key].history_event_types)


@pytest.mark.parametrize("key", PLUGINS)
def test_every_mapped_event_type_has_a_fixture_named_after_it(key):
    """Each webhook event the mapping handles has <event>.json or <event>__<variant>.json."""
    stems = {p.stem.split("__")[0] for p in fixtures_of(key)}
    history = set(CLASSES[key].history_event_types)
    missing = [
        e for e in shipped(key).events if e not in history and e.replace(".", "_") not in stems
    ]
    assert missing == []


IMPORTERS = sorted(k for k in PLUGINS if Capability.IMPORT_HISTORY in CLASSES[k].capabilities)


def history_fixtures(key: str) -> list[Path]:
    """Return a plugin's history fixtures: pages of its API as the vendor sends them."""
    return sorted((CLASSES[key].folder() / "fixtures" / "history").glob("*.json"))


def test_the_tools_with_an_api_to_read_can_import_their_history():
    """Zendesk, Salesforce and Twilio declare that they import history."""
    assert IMPORTERS == ["salesforce", "twilio", "zendesk"]


@pytest.mark.parametrize("key", IMPORTERS)
def test_every_history_event_type_comes_from_a_history_fixture_and_maps_cleanly(key):
    """Each page in fixtures/history/ reads as events of the declared history types, every
    one of which the shipped mapping maps to a record of the plugin, keyed by its version."""
    cls = CLASSES[key]
    mapping = shipped(key)
    produced = set()
    assert history_fixtures(key)
    for path in history_fixtures(key):
        page = cls.history_page(json.loads(path.read_bytes()), datetime(2025, 12, 6))
        assert page.events, path.name
        for event in page.events:
            produced.add(event.type)
            assert event.key.startswith("history:") and "@" in event.key
            interaction = mapping.apply(event.type, event.payload, RECEIVED)
            assert interaction.source == key
            assert interaction.kind in KINDS and interaction.channel in CHANNELS
            assert interaction.occurred_at != RECEIVED, "the record's own time is mapped"
    assert produced == set(cls.history_event_types)


@pytest.mark.parametrize("key", PLUGINS)
def test_every_declared_event_type_is_produced_by_a_fixture(key):
    """Each declared event type comes out of parsing at least one fixture."""
    plugin = plugin_instance(key)
    produced = set()
    for path in fixtures_of(key):
        try:
            produced |= {e.type for e in plugin.parse(fixture_request(path))}
        except UnsupportedEvent:
            continue
    assert set(CLASSES[key].event_types) - produced == set()


@pytest.mark.parametrize("key", PLUGINS)
def test_every_fixture_parses_and_maps_cleanly_to_canonical_values(key):
    """Each fixture parses (or is a deliberately unused type) and maps with no error."""
    plugin = plugin_instance(key)
    mapping = shipped(key)
    mapped = 0
    for path in fixtures_of(key):
        try:
            events = plugin.parse(fixture_request(path))
        except UnsupportedEvent:
            continue
        for event in events:
            assert event.type.replace(".", "_").startswith(path.stem.split("__")[0]), path.name
            if not mapping.handles(event.type):
                continue
            if mapping.describes_customer(event.type):
                record = mapping.apply_customer(event.type, event.payload)
                mapped += 1
                assert record.identities, path.name
                assert record.record_ref == f"{key}:{event.type.split('.')[0]}:{record.external_id}"
                continue
            interaction = mapping.apply(event.type, event.payload, RECEIVED)
            mapped += 1
            assert interaction.source == key
            assert isinstance(interaction.external_id, str) and interaction.external_id
            assert interaction.kind in KINDS, path.name
            assert interaction.channel in CHANNELS, path.name
            assert interaction.direction in (None, *DIRECTIONS), path.name
            assert interaction.record_ref == f"{key}:{interaction.kind}:{interaction.external_id}"
    assert mapped > 0


@pytest.mark.parametrize("key", PLUGINS)
def test_every_plugin_documents_its_setup_and_marks_secrets(key):
    """Each plugin has setup docs, a title, capabilities and at least one secret setting."""
    cls = CLASSES[key]
    assert cls.key == key
    assert cls.title and cls.setup_doc.strip() and cls.capabilities
    assert any(s.secret for s in cls.settings.values())


@pytest.mark.parametrize("key", PLUGINS)
def test_every_fixture_file_is_named_with_its_source_in_fixtures_md(key):
    """Each plugin's FIXTURES.md names every file under fixtures/ (path in backticks)."""
    folder = CLASSES[key].folder()
    cited = (folder / "FIXTURES.md").read_text(encoding="utf-8")
    files = (folder / "fixtures").rglob("*")
    names = sorted(p.relative_to(folder / "fixtures").as_posix() for p in files if p.is_file())
    unnamed = [name for name in names if f"`{name}`" not in cited]
    assert unnamed == []


# -- the Zendesk fixtures, exactly ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ticket_created.json",
         ("ticket.created", "5158", "ticket", "api", "open", "2025-01-08T10:12:07", True)),
        ("ticket_created__mail.json",
         ("ticket.created", "5141", "ticket", "email", "new", "2025-01-06T08:30:00", True)),
        ("ticket_created__facebook_message.json",
         ("ticket.created", "5149", "ticket", "facebook", "new", "2025-01-07T16:02:11", True)),
        ("ticket_status_changed.json",
         ("ticket.status_changed", "5141", "ticket", "email", "solved", "2025-01-08T09:00:00",
          False)),
        ("ticket_comment_added.json",
         ("ticket.comment_added", "5141#39016743929486", "message", "email", None,
          "2025-01-07T11:15:42", False)),
        ("trigger_ticket_created.json",
         ("trigger.ticket.created", "5160", "ticket", "phone", "new", "2025-01-09T14:03:00",
          True)),
        ("trigger_ticket_updated.json",
         ("trigger.ticket.updated", "5160", "ticket", "phone", "solved", "2025-01-09T14:03:00",
          False)),
    ],
)  # fmt: skip
def test_zendesk_fixture_maps_to_the_expected_interaction(name, expected):
    """Each Zendesk fixture becomes exactly the interaction an agent would expect."""
    plugin = plugin_instance("zendesk")
    [event] = plugin.parse(fixture_request(plugin.folder() / "fixtures" / name))
    interaction = shipped("zendesk").apply(event.type, event.payload, RECEIVED)
    assert (
        event.type,
        interaction.external_id,
        interaction.kind,
        interaction.channel,
        interaction.status,
        interaction.occurred_at.isoformat(),
        interaction.creates,
    ) == expected


def test_trigger_fixture_carries_requester_identities_name_agent_and_team():
    """The README trigger body yields the requester's id, email and phone, agent and team."""
    payload = json.loads(fixture_bytes("trigger_ticket_created.json"))
    interaction = shipped("zendesk").apply("trigger.ticket.created", payload, RECEIVED)
    assert interaction.identities == (
        Identity("zendesk_user", "8447388090501"),
        Identity("email", "Ann.Example@Example.com"),
        Identity("phone", "+1 (415) 555-0142"),
    )
    assert (interaction.customer_name, interaction.agent, interaction.team) == (
        "Ann Example",
        "Sam Agent",
        "Billing",
    )
    assert interaction.link == "https://acme.zendesk.com/agent/tickets/5160"


def test_minimal_detail_falls_back_to_the_event_time():
    """A status change whose detail lacks created_at takes the event's time, microseconds cut."""
    payload = json.loads(fixture_bytes("ticket_status_changed.json"))
    payload["time"] = "2025-01-08T09:00:00.123456789Z"
    interaction = shipped("zendesk").apply("ticket.status_changed", payload, RECEIVED)
    assert interaction.occurred_at == datetime(2025, 1, 8, 9, 0, 0, 123456)


# -- channel vocabularies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("via", "channel"),
    [
        # webhook via types
        ("mail", "email"), ("web_form", "web"), ("web_service", "api"), ("chat", "chat"),
        ("twitter", "twitter"), ("twitter_dm", "twitter"), ("twitter_favorite", "twitter"),
        ("voicemail", "phone"), ("phone_call_inbound", "phone"), ("phone_call_outbound", "phone"),
        ("facebook_post", "facebook"), ("facebook_message", "facebook"),
        ("native_messaging", "messaging"), ("sms", "sms"),
        # REST channel names
        ("email", "email"), ("web", "web"), ("api", "api"), ("voice", "phone"),
        ("facebook", "facebook"), ("mobile_sdk", "messaging"),
        # upper case, and what Carryover does not know
        ("MAIL", "email"), ("rule", "other"), ("system", "other"), ("any_channel", "other"),
        ("carrier_pigeon", "other"), (None, "other"),
    ],
)  # fmt: skip
def test_both_zendesk_channel_vocabularies_map_and_unknown_is_other(via, channel):
    """Via types (mail, web_service, native_messaging) and REST names (email, api) both map."""
    payload = created_with(via={"channel": via})
    assert shipped("zendesk").apply("ticket.created", payload, RECEIVED).channel == channel


def test_missing_via_maps_to_other():
    """A ticket whose detail has no via at all is channel other, not an error."""
    payload = created_with()
    del payload["detail"]["via"]
    assert shipped("zendesk").apply("ticket.created", payload, RECEIVED).channel == "other"


@pytest.mark.parametrize(
    ("label", "channel"),
    [("Web form", "web"), ("Mail", "email"), ("Phone call (incoming)", "phone"),
     ("Web service", "api"), ("Twitter DM", "twitter"), ("Something new", "other")],
)  # fmt: skip
def test_trigger_via_display_labels_map(label, channel):
    """The {{ticket.via}} display labels of trigger bodies map to canonical channels."""
    payload = json.loads(fixture_bytes("trigger_ticket_created.json"))
    payload["ticket"]["via"] = label
    assert shipped("zendesk").apply("trigger.ticket.created", payload, RECEIVED).channel == channel


# -- errors name the path ----------------------------------------------------------------------


def test_missing_required_path_names_field_and_payload_path():
    """A ticket.created without detail.id fails naming the mapping field and the payload path."""
    payload = created_with()
    del payload["detail"]["id"]
    with pytest.raises(MappingError) as error:
        shipped("zendesk").apply("ticket.created", payload, RECEIVED)
    assert "events.ticket.created.interaction.external_id" in str(error.value)
    assert "detail.id" in str(error.value)


def test_missing_part_of_a_format_names_the_format():
    """A comment without its id fails naming external_id and the format it could not fill."""
    payload = json.loads(fixture_bytes("ticket_comment_added.json"))
    del payload["event"]["comment"]["id"]
    with pytest.raises(MappingError) as error:
        shipped("zendesk").apply("ticket.comment_added", payload, RECEIVED)
    assert "events.ticket.comment_added.interaction.external_id" in str(error.value)
    assert "{event.comment.id}" in str(error.value)


def test_unreadable_date_names_the_field_and_value():
    """A created_at that is not a date fails naming occurred_at and the value."""
    with pytest.raises(MappingError) as error:
        shipped("zendesk").apply("ticket.created", created_with(created_at="yesterday"), RECEIVED)
    assert "events.ticket.created.interaction.occurred_at" in str(error.value)
    assert "'yesterday'" in str(error.value)


def test_value_that_is_not_canonical_names_the_field():
    """A channel path without a table that yields an unknown word fails naming the field."""
    raw = zendesk_mapping_raw()
    raw["events"]["ticket.created"]["interaction"]["channel"] = {"path": "detail.via.channel"}
    mapping = parse_mapping("zendesk", raw)
    with pytest.raises(MappingError, match=r"ticket\.created\.interaction\.channel: 'mail'"):
        mapping.apply("ticket.created", created_with(), RECEIVED)


def test_duration_that_is_not_a_number_names_the_field():
    """duration_s mapped to text fails naming duration_s."""
    raw = zendesk_mapping_raw()
    raw["events"]["ticket.created"]["interaction"]["duration_s"] = {"path": "detail.subject"}
    mapping = parse_mapping("zendesk", raw)
    with pytest.raises(MappingError, match=r"interaction\.duration_s: 'Charged twice"):
        mapping.apply("ticket.created", created_with(), RECEIVED)


# -- invalid mapping files --------------------------------------------------------------------


def edited(change) -> dict[str, Any]:
    """Return the shipped Zendesk mapping with one change applied."""
    raw = copy.deepcopy(zendesk_mapping_raw())
    change(raw)
    return raw


def created_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """Return the ticket.created interaction fields of a raw mapping."""
    return raw["events"]["ticket.created"]["interaction"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: created_fields(r)["status"].update(lowercase=True),
         "events.ticket.created.interaction.status.lowercase: unknown option"),
        (lambda r: created_fields(r)["channel"].update(table="chanels"),
         "events.ticket.created.interaction.channel.table: unknown table 'chanels'"),
        (lambda r: created_fields(r).update(kind="incident"),
         "events.ticket.created.interaction.kind: 'incident' is not one of"),
        (lambda r: created_fields(r).update(channel="e-mail"),
         "events.ticket.created.interaction.channel: 'e-mail' is not one of"),
        (lambda r: created_fields(r)["channel"].update(default="unknown"),
         "events.ticket.created.interaction.channel.default: 'unknown' is not one of"),
        (lambda r: created_fields(r).update(direction="incoming"),
         "events.ticket.created.interaction.direction: 'incoming' is not one of"),
        (lambda r: r["tables"]["channels"].update(mail="e-mail"),
         "events.ticket.created.interaction.channel.table (channels.mail): 'e-mail'"),
        (lambda r: created_fields(r).update(priority={"path": "detail.priority"}),
         "events.ticket.created.interaction.priority: unknown field"),
        (lambda r: created_fields(r).pop("external_id"),
         "events.ticket.created.interaction.external_id: required"),
        (lambda r: created_fields(r).update(subject={"path": "a", "format": "{b}"}),
         "events.ticket.created.interaction.subject: give exactly one of"),
        (lambda r: created_fields(r).update(subject={"first": []}),
         "events.ticket.created.interaction.subject.first: expected a non-empty list"),
        (lambda r: created_fields(r).update(subject=["detail.subject"]),
         "events.ticket.created.interaction.subject: expected a value or a mapping"),
        (lambda r: created_fields(r).update(identities=["email"]),
         "events.ticket.created.interaction.identities: expected a mapping"),
        (lambda r: created_fields(r)["identities"].update(email={"path": 3}),
         "events.ticket.created.interaction.identities.email.path: expected a dotted path"),
        (lambda r: r["events"]["ticket.created"].update(create=True),
         "events.ticket.created.create: unknown key"),
        (lambda r: r["events"]["ticket.created"].pop("interaction"),
         "events.ticket.created: expected a mapping with 'interaction'"),
        (lambda r: r.update(event=r.pop("events")), "event: unknown key"),
        (lambda r: r.update(events={}), "events: expected a mapping of event types"),
        (lambda r: r.update(tables={"channels": ["mail"]}), "tables.channels: expected a mapping"),
    ],
)  # fmt: skip
def test_invalid_mapping_fails_validation_naming_the_path(change, message):
    """An invalid edit of the mapping is refused at load time with the failing path."""
    with pytest.raises(MappingError) as error:
        parse_mapping("zendesk", edited(change), origin="mappings/zendesk.yaml")
    assert message in str(error.value)
    assert str(error.value).startswith("mappings/zendesk.yaml: ")


def test_mapping_that_is_not_yaml_names_the_file(tmp_path):
    """A YAML syntax error in a mapping file names the file."""
    path = tmp_path / "zendesk.yaml"
    path.write_text("events: {ticket.created: [\n", encoding="utf-8")
    with pytest.raises(MappingError, match="not valid YAML") as error:
        load_mapping("zendesk", path)
    assert str(path) in str(error.value)


def test_admin_edit_adding_a_channel_and_a_custom_field_works(tmp_path):
    """Admins may add a table entry and a field; the edited mapping loads and applies."""
    raw = zendesk_mapping_raw()
    raw["tables"]["channels"]["carrier_pigeon"] = "other"
    raw["tables"]["channels"]["whatsapp_business"] = "whatsapp"
    created_fields(raw)["team"] = {"path": "detail.group_id", "default": "unassigned"}
    path = tmp_path / "zendesk.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    mapping = load_mapping("zendesk", path)
    payload = created_with(via={"channel": "whatsapp_business"})
    interaction = mapping.apply("ticket.created", payload, RECEIVED)
    assert (interaction.channel, interaction.team) == ("whatsapp", "8447320466430")


def test_cli_refuses_to_start_with_an_invalid_mapping(tmp_path, capsys):
    """`carryover` with a broken mappings/zendesk.yaml exits 2 naming the file and path."""
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    raw = edited(lambda r: created_fields(r).update(kind="incident"))
    (mappings / "zendesk.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"database_url: sqlite:///{tmp_path / 'co.db'}\n"
        f"mappings_dir: {mappings}\n"
        "integrations:\n  zendesk: {url: 'https://acme.zendesk.com', email: bot@example.com,\n"
        "    api_token: t, webhook_secret: s}\n",
        encoding="utf-8",
    )
    assert main(["db", "upgrade", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(mappings / "zendesk.yaml") in err
    assert "events.ticket.created.interaction.kind" in err


# -- customer records, identity lists and "no value" table entries ---------------------------


def test_a_customer_record_maps_identities_from_a_list_of_specs():
    """An event with `customer:` yields a record; an identity may list several specs."""
    mapping = parse_mapping("crm", {"events": {"contact.changed": {"customer": {
        "external_id": {"path": "Id", "required": True},
        "customer_name": {"path": "Name"},
        "identities": {"email": {"path": "Email"},
                       "phone": [{"path": "Phone"}, {"path": "MobilePhone"}]},
    }}}})  # fmt: skip
    assert mapping.describes_customer("contact.changed")
    record = mapping.apply_customer(
        "contact.changed", {"Id": "003", "Name": "Ann", "Email": "a@example.com",
                            "Phone": "+14155550142", "MobilePhone": None},
    )  # fmt: skip
    assert record.record_ref == "crm:contact:003"
    assert record.customer_name == "Ann"
    assert record.identities == (Identity("email", "a@example.com"),
                                 Identity("phone", "+14155550142"))  # fmt: skip
    with pytest.raises(MappingError, match=r"events.contact.changed.customer.external_id"):
        mapping.apply_customer("contact.changed", {"Name": "Ann"})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"customer": {"identities": {}}}, "customer.external_id: required"),
        ({"customer": {"external_id": "x", "kind": "case"}}, "customer.kind: unknown field"),
        ({"customer": {"external_id": "x"}, "interaction": {}}, "expected a mapping with"),
        ({"customer": {"external_id": "x", "identities": {"phone": []}}}, "non-empty list"),
    ],
)
def test_a_customer_record_takes_only_its_own_fields(entry, message):
    """A customer record needs external_id, knows no interaction fields, and is one or other."""
    with pytest.raises(MappingError, match=re.escape(message)):
        parse_mapping("crm", {"events": {"contact.changed": entry}})


def test_a_table_entry_of_empty_string_means_no_value_so_first_goes_on():
    """{"true": closed, "*": ""}: a closed flag wins, otherwise the next spec gives the status."""
    mapping = parse_mapping("crm", {
        "tables": {"closed": {"true": "closed", "*": ""}},
        "events": {"case.updated": {"interaction": {
            "kind": "case", "external_id": {"path": "Id"},
            "status": {"first": [{"path": "IsClosed", "table": "closed"}, {"path": "Status"}],
                       "lower": True},
        }}},
    })  # fmt: skip
    status = {
        flag: mapping.apply(
            "case.updated", {"Id": "1", "IsClosed": flag, "Status": "Working"}, RECEIVED
        ).status  # fmt: skip
        for flag in ("true", "false")
    }
    assert status == {"true": "closed", "false": "working"}


# -- who wrote the text, and the number agents know a record by ------------------------------


def mapped_fixture(key: str, name: str):
    """Parse one fixture of a plugin and map its (single) event with the shipped mapping."""
    plugin = plugin_instance(key)
    [event] = plugin.parse(fixture_request(plugin.folder() / "fixtures" / name))
    return shipped(key).apply(event.type, event.payload, RECEIVED)


@pytest.mark.parametrize(
    ("key", "name", "said_by", "number"),
    [
        ("zendesk", "ticket_created__mail.json", "customer", "5141"),
        ("zendesk", "ticket_comment_added.json", "customer", "5141"),
        ("zendesk", "ticket_status_changed.json", None, "5141"),
        ("zendesk", "trigger_ticket_created.json", None, "5160"),
        ("salesforce", "case_created__web_to_case.xml", "customer", "00001027"),
        ("salesforce", "case_created.xml", None, "00001026"),  # Origin Phone, no Description
        ("salesforce", "casecomment_created.xml", "agent", None),
        ("twilio", "message_received.form", "customer", None),
        ("twilio", "call_started__ringing.form", None, None),
    ],
)  # fmt: skip
def test_shipped_mappings_tell_who_wrote_the_text_and_the_record_number(key, name, said_by, number):
    """Requester's words and inbound SMS are the customer's; a case keeps its CaseNumber."""
    interaction = mapped_fixture(key, name)
    assert (interaction.said_by if interaction.text else None, interaction.number) == (
        said_by,
        number,
    )


def test_a_zendesk_description_or_comment_by_someone_else_than_the_requester_is_an_agents():
    """A ticket an agent submitted for the requester, and an agent's reply, are an agent's words."""
    payload = json.loads(fixture_bytes("ticket_created__mail.json"))
    payload["detail"]["submitter_id"] = "8447388090494"
    created = shipped("zendesk").apply("ticket.created", payload, RECEIVED)
    assert created.said_by == "agent"
    payload = json.loads(fixture_bytes("ticket_comment_added__by_agent.json"))
    reply = shipped("zendesk").apply("ticket.comment_added", payload, RECEIVED)
    assert (reply.text, reply.said_by) == ("We are looking into it.", "agent")


@pytest.mark.parametrize(
    ("origin", "said_by"),
    [("Web", "customer"), ("Email", "customer"), ("Phone", "agent"), ("Chat", "agent"),
     (None, None)],
)  # fmt: skip
def test_a_salesforce_case_description_is_the_customers_only_from_web_or_email(origin, said_by):
    """Web-to-case and email-to-case carry the customer's text; a phone case an agent's."""
    plugin = plugin_instance("salesforce")
    [event] = plugin.parse(
        fixture_request(plugin.folder() / "fixtures" / "case_created__web_to_case.xml")
    )
    payload = copy.deepcopy(event.payload)
    payload["sObject"]["Origin"] = origin
    interaction = shipped("salesforce").apply(event.type, payload, RECEIVED)
    assert interaction.text and interaction.said_by == said_by


def equals_mapping() -> PluginMapping:
    """A mapping whose said_by compares the author with the requester."""
    return parse_mapping("crm", {
        "tables": {"authors": {"true": "customer", "false": "agent"}},
        "events": {"comment.added": {"interaction": {
            "kind": "message", "external_id": {"path": "id"}, "text": {"path": "body"},
            "said_by": {"path": "author", "equals": "requester", "table": "authors"},
        }}},
    })  # fmt: skip


@pytest.mark.parametrize(
    ("author", "requester", "said_by"),
    [("7", "7", "customer"), (7, "7", "customer"), ("8", "7", "agent"), (None, "7", None),
     ("7", None, None)],
)  # fmt: skip
def test_equals_compares_two_paths_and_a_missing_side_tells_nothing(author, requester, said_by):
    """equals yields "true"/"false" for the table; either side missing leaves the value unknown."""
    payload = {"id": "1", "body": "hi", "author": author, "requester": requester}
    assert equals_mapping().apply("comment.added", payload, RECEIVED).said_by == said_by


@pytest.mark.parametrize(
    ("said_by", "message"),
    [({"path": "a", "equals": 3}, "said_by.equals: expected a dotted path"),
     ("someone", "said_by: 'someone' is not one of customer, agent")],
)  # fmt: skip
def test_a_bad_said_by_is_refused_when_the_mapping_is_loaded(said_by, message):
    """An equals that is no path, or an author outside the vocabulary, fails validation."""
    with pytest.raises(MappingError, match=re.escape(message)):
        parse_mapping("crm", {"events": {"comment.added": {"interaction": {
            "kind": "message", "external_id": {"path": "id"}, "said_by": said_by,
        }}}})  # fmt: skip


def test_a_said_by_that_a_payload_makes_unknown_is_refused_naming_the_field():
    """A said_by read from the payload must still be customer or agent."""
    mapping = parse_mapping("crm", {"events": {"comment.added": {"interaction": {
        "kind": "message", "external_id": {"path": "id"}, "said_by": {"path": "who"},
    }}}})  # fmt: skip
    with pytest.raises(MappingError, match="said_by: 'bot' is not one of"):
        mapping.apply("comment.added", {"id": "1", "who": "bot"}, RECEIVED)


# -- lists of items (a chat's messages) and preferred channels ---------------------------------


def chat_mapping(text_spec: dict[str, Any]) -> PluginMapping:
    """Return a mapping whose chat text is read with the given spec."""
    return parse_mapping("crm", {"events": {"chat.ended": {"interaction": {
        "kind": "message", "external_id": {"path": "id"}, "text": text_spec,
        "preferred_channels": {"path": "prefers"},
    }}}})  # fmt: skip


CHAT = {"id": "c1", "messages": [
    {"from": "bot", "text": "Hello"}, {"from": "customer", "text": "My parcel is late"},
    {"from": "customer", "text": ""}, "not an item", {"from": "customer", "text": {"x": 1}},
    {"from": "customer", "text": "Order 1043"},
]}  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "text"),
    [({"path": "messages", "where": {"from": "customer"}, "pick": "text", "join": " / "},
      "My parcel is late / Order 1043"),
     ({"path": "messages", "pick": "text", "join": "\n"}, "Hello\nMy parcel is late\nOrder 1043"),
     ({"path": "messages", "where": {"from": "agent"}, "pick": "text", "join": " "}, None)],
)  # fmt: skip
def test_where_pick_and_join_keep_the_matching_items_values(spec, text):
    """where keeps matching items (others and non-objects skipped), pick reads each, join joins."""
    assert chat_mapping(spec).apply("chat.ended", CHAT, RECEIVED).text == text


@pytest.mark.parametrize(
    ("prefers", "channels"),
    [(["Phone", "email", "phone"], ("phone", "email")), ("sms, pigeon", ("sms", "pigeon")),
     (None, None), ([{"a": 1}], ())],
)  # fmt: skip
def test_preferred_channels_are_read_as_lower_case_names_in_order(prefers, channels):
    """A list or a comma-separated text becomes names, lower-case, once each; the pipeline
    drops the names that are no channel."""
    payload = {"id": "c1", "prefers": prefers}
    mapping = chat_mapping({"path": "messages"})
    assert mapping.apply("chat.ended", payload, RECEIVED).preferred_channels == channels


@pytest.mark.parametrize(
    ("spec", "message"),
    [({"path": "m", "where": ["from"]}, "text.where: expected a mapping of field names"),
     ({"path": "m", "pick": 3}, "text.pick: expected a dotted path"),
     ({"path": "m", "join": 1}, "text.join: expected a string")],
)  # fmt: skip
def test_a_bad_where_pick_or_join_is_refused_when_the_mapping_is_loaded(spec, message):
    """where must map names to values, pick be a path and join a string."""
    with pytest.raises(MappingError, match=re.escape(message)):
        chat_mapping(spec)
