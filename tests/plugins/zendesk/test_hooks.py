"""The inbound HTTP contract of POST /hooks/zendesk: authentic or nothing, clear errors, no 5xx."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import func, select
from waitress import wasyncore

from devkit.simulators.zendesk import FakeZendesk
from middleware import throttled_log
from middleware.config import SERVER, Config, validate_section
from middleware.errors import InvalidSignature
from middleware.ingest.hooks import REFUSAL_LOG_INTERVAL_S
from middleware.ingest.inbox import DeliveryInbox
from middleware.installation import Installation, build_installation
from middleware.integrations.plugin import InboundRequest
from middleware.store.tables import deliveries, delivery_keys, interactions, make_engine
from middleware.web.app import create_app
from middleware.web.serving import build_server
from plugins.zendesk import ZendeskPlugin, sign
from tests.actions import ConfigFactory
from tests.payloads import fixture_bytes, zendesk_event, zendesk_headers
from tests.values import FIXTURES

# WIRE-FORMATS.md: both vectors use the fixed secret of Zendesk's "Test webhook" button.
VECTOR_SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
TEST_BUTTON_BODY = b'{"event":"ticket.updated","id":123}'
CREATED_BODY = (
    b'{"type":"zen:event-type:ticket.created","account_id":22129848,'
    b'"id":"cbe4028c-7239-495d-b020-f22348516046","time":"2025-01-08T10:12:07.672717030Z",'
    b'"zendesk_event_version":"2022-11-06","subject":"zen:ticket:5158",'
    b'"detail":{"id":"5158","via":{"channel":"web_service"}},"event":{}}'
)
VECTORS = [
    ("2021-03-25T05:09:27Z", TEST_BUTTON_BODY, "S/RDdU2ERmj7LHDDoWJ2onPYH+t7/f2+LTM4dL7UiLM="),
    ("2025-01-08T10:12:08Z", CREATED_BODY, "P8VjeMTUEvtxTSZoOHDM7UoQMkq0Q4gujy68BRNLnhM="),
]
UNREACHABLE_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:1/carryover?connect_timeout=2"
# Each outage as the log names it: the driver's error, never SQLAlchemy's statement.
OUTAGES = {
    "unmigrated-sqlite": "OperationalError: no such table: main.deliveries",
    "unreachable-postgresql": "OperationalError: connection failed: ",
}
REFUSED_IN_AN_OUTAGE = 50


def stored(core: Installation) -> tuple[int, int]:
    """Count the stored deliveries and dedupe keys."""
    with core.engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(deliveries)).scalar_one()
        keys = conn.execute(select(func.count()).select_from(delivery_keys)).scalar_one()
    return rows, keys


def stamp(offset: timedelta = timedelta(0)) -> str:
    """Return a Zendesk signature timestamp, `offset` away from now."""
    return (datetime.now(UTC) + offset).strftime("%Y-%m-%dT%H:%M:%SZ")


def zendesk_plugin(**options: Any) -> ZendeskPlugin:
    """Build a Zendesk plugin instance with the vectors' secret and the given options."""
    raw = {
        "url": "https://acme.zendesk.com",
        "email": "bot@example.com",
        "api_token": "unused",
        "webhook_secret": VECTOR_SECRET,
        **options,
    }
    settings = validate_section("integrations.zendesk", raw, ZendeskPlugin.settings)
    return ZendeskPlugin(settings, Config())


def vector_request(timestamp: str, body: bytes, signature: str) -> InboundRequest:
    """Build the inbound request Zendesk would send for a signature vector."""
    return InboundRequest(
        path="/hooks/zendesk",
        url="http://127.0.0.1:8080/hooks/zendesk",
        headers={
            "content-type": "application/json",
            "x-zendesk-webhook-signature": signature,
            "x-zendesk-webhook-signature-timestamp": timestamp,
        },
        body=body,
    )


@pytest.fixture
def build_client(
    database_url: str, fake_zendesk: FakeZendesk, make_config: ConfigFactory
) -> Iterator[Callable[..., tuple[Installation, FlaskClient]]]:
    """Build installations with their own Zendesk options (e.g. signature_tolerance_s)."""
    built: list[Installation] = []

    def build(**zendesk_options: Any) -> tuple[Installation, FlaskClient]:
        config = make_config(database_url, fake_zendesk.url, zendesk_options)
        core = build_installation(config)
        built.append(core)
        return core, create_app(core=core).test_client()

    yield build
    for core in built:
        core.dispose()


# -- signature ------------------------------------------------------------------------------


@pytest.mark.parametrize(("timestamp", "body", "expected"), VECTORS)
def test_sign_reproduces_the_wire_format_vectors(timestamp, body, expected):
    """sign() gives exactly the documented signature for each WIRE-FORMATS.md vector."""
    assert sign(VECTOR_SECRET, timestamp, body) == expected


def test_the_test_webhook_fixture_holds_the_first_vector_body_exactly():
    """The test_webhook.json fixture is byte for byte the body of the first vector."""
    assert fixture_bytes("test_webhook.json") == TEST_BUTTON_BODY
    timestamp, _, signature = VECTORS[0]
    assert sign(VECTOR_SECRET, timestamp, fixture_bytes("test_webhook.json")) == signature


@pytest.mark.parametrize(("timestamp", "body", "signature"), VECTORS)
def test_verify_accepts_the_vectors_with_the_freshness_check_off(timestamp, body, signature):
    """verify() accepts each vector when signature_tolerance_s is 0, proven by signature."""
    request = vector_request(timestamp, body, signature)
    assert zendesk_plugin(signature_tolerance_s=0).verify(request) == "signature"


@pytest.mark.parametrize(("timestamp", "body", "signature"), VECTORS)
def test_verify_refuses_the_vectors_as_stale_with_the_default_tolerance(timestamp, body, signature):
    """With the default one-hour window, the vectors' old timestamps are refused as stale."""
    with pytest.raises(InvalidSignature, match="off"):
        zendesk_plugin().verify(vector_request(timestamp, body, signature))


@pytest.mark.parametrize(("timestamp", "body", "signature"), VECTORS)
def test_verify_refuses_a_vector_with_one_byte_changed(timestamp, body, signature):
    """A single changed byte of the body breaks the signature."""
    changed = body.replace(b"ticket.", b"ticket_", 1)
    with pytest.raises(InvalidSignature, match="does not match"):
        zendesk_plugin(signature_tolerance_s=0).verify(
            vector_request(timestamp, changed, signature)
        )


def test_second_vector_posted_as_is_is_stored(build_client):
    """The second vector, posted with its own headers, is accepted and stored once."""
    core, client = build_client(webhook_secret=VECTOR_SECRET, signature_tolerance_s=0)
    timestamp, body, signature = VECTORS[1]
    response = client.post(
        "/hooks/zendesk",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Zendesk-Webhook-Signature": signature,
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
        },
    )
    assert response.status_code == 200
    assert stored(core) == (1, 1)
    with core.engine.connect() as conn:
        row = conn.execute(select(deliveries)).one()
    assert json.loads(row.event_keys) == ["event:cbe4028c-7239-495d-b020-f22348516046"]
    assert bytes(row.body) == body


def test_first_vector_posted_as_is_is_acknowledged_and_ignored(build_client):
    """The Test-webhook vector is authentic, answered 200 ignored, and not stored."""
    core, client = build_client(webhook_secret=VECTOR_SECRET, signature_tolerance_s=0)
    timestamp, body, signature = VECTORS[0]
    response = client.post(
        "/hooks/zendesk",
        data=body,
        headers={
            "X-Zendesk-Webhook-Signature": signature,
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
        },
    )
    assert response.status_code == 200
    assert "test delivery" in response.get_json()["ignored"]
    assert stored(core) == (0, 0)


def test_bad_signature_gets_401_and_stores_nothing(client, core, hooks):
    """A delivery signed with another secret gets 401 and leaves no trace in the store."""
    response = hooks.zendesk(fixture_bytes("ticket_created__mail.json"), secret="wrong")
    assert response.status_code == 401
    assert "signature" in response.get_json()["error"].lower()
    assert stored(core) == (0, 0)


def test_signature_of_another_body_gets_401(client, core):
    """A valid signature over a different body does not authenticate this one."""
    body = fixture_bytes("ticket_created__mail.json")
    headers = zendesk_headers(fixture_bytes("ticket_created.json"))
    assert client.post("/hooks/zendesk", data=body, headers=headers).status_code == 401
    assert stored(core) == (0, 0)


def test_signature_for_another_timestamp_gets_401(client, core):
    """Replacing the timestamp header invalidates the signature made with the old one."""
    body = fixture_bytes("ticket_created__mail.json")
    headers = zendesk_headers(body, timestamp=stamp(-timedelta(minutes=5)))
    headers["X-Zendesk-Webhook-Signature-Timestamp"] = stamp()
    assert client.post("/hooks/zendesk", data=body, headers=headers).status_code == 401
    assert stored(core) == (0, 0)


@pytest.mark.parametrize(
    "missing",
    [
        ["X-Zendesk-Webhook-Signature"],
        ["X-Zendesk-Webhook-Signature-Timestamp"],
        ["X-Zendesk-Webhook-Signature", "X-Zendesk-Webhook-Signature-Timestamp"],
    ],
)
def test_missing_signature_headers_get_401(client, core, missing):
    """A delivery without the signature or its timestamp gets 401 and is not stored."""
    body = fixture_bytes("ticket_created__mail.json")
    headers = {k: v for k, v in zendesk_headers(body).items() if k not in missing}
    response = client.post("/hooks/zendesk", data=body, headers=headers)
    assert response.status_code == 401
    assert "error" in response.get_json()
    assert stored(core) == (0, 0)


def test_timestamp_over_an_hour_old_gets_401(client, core, hooks):
    """A correctly signed delivery whose timestamp is more than 1 h old is refused."""
    body = fixture_bytes("ticket_created__mail.json")
    response = hooks.zendesk(body, timestamp=stamp(-timedelta(hours=1, seconds=30)))
    assert response.status_code == 401
    assert "off" in response.get_json()["error"]
    assert stored(core) == (0, 0)


def test_timestamp_within_the_hour_is_accepted(client, core, hooks):
    """A Zendesk retry signed 55 minutes ago is still inside the one-hour window."""
    body = fixture_bytes("ticket_created__mail.json")
    response = hooks.zendesk(body, timestamp=stamp(-timedelta(minutes=55)))
    assert response.status_code == 200
    assert stored(core) == (1, 1)


def test_timestamp_in_the_future_beyond_tolerance_gets_401(client, core, hooks):
    """A timestamp more than the tolerance ahead of our clock is refused too."""
    body = fixture_bytes("ticket_created__mail.json")
    response = hooks.zendesk(body, timestamp=stamp(timedelta(hours=2)))
    assert response.status_code == 401
    assert stored(core) == (0, 0)


def test_configured_tolerance_is_honoured(build_client, hooks_for):
    """signature_tolerance_s: 60 refuses a delivery signed five minutes ago."""
    core, client = build_client(signature_tolerance_s=60)
    body = fixture_bytes("ticket_created__mail.json")
    response = hooks_for(client).zendesk(body, timestamp=stamp(-timedelta(minutes=5)))
    assert response.status_code == 401
    assert stored(core) == (0, 0)


def test_timestamp_that_is_not_iso_8601_gets_401(client, core, hooks):
    """A correctly signed delivery with an unreadable timestamp cannot be checked: 401."""
    body = fixture_bytes("ticket_created__mail.json")
    response = hooks.zendesk(body, timestamp="last tuesday")
    assert response.status_code == 401
    assert "ISO-8601" in response.get_json()["error"]
    assert stored(core) == (0, 0)


# -- malformed payloads -----------------------------------------------------------------------


def test_malformed_json_gets_400_naming_line_and_column(client, core, hooks):
    """Broken JSON gets 400 with an error saying what is wrong and where."""
    body = fixture_bytes("ticket_created.json")[:120]
    response = hooks.zendesk(body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert "not valid JSON" in error
    assert "line 1 column" in error
    assert stored(core) == (0, 0)


def test_trigger_body_broken_by_a_quote_in_a_placeholder_gets_400(client, core, hooks):
    """A trigger body whose placeholder brought an unescaped quote is a 400, not a 5xx."""
    body = fixture_bytes("trigger_ticket_created.json").replace(
        b"Refund still missing", b'Refund "still" missing'
    )
    response = hooks.zendesk(body)
    assert response.status_code == 400
    assert "line 5" in response.get_json()["error"]
    assert stored(core) == (0, 0)


@pytest.mark.parametrize("body", [b"[]", b"[" + fixture_bytes("ticket_created.json") + b"]"])
def test_json_array_gets_400(client, core, body, hooks):
    """A JSON array is not a Zendesk payload: 400 naming the expected object."""
    response = hooks.zendesk(body)
    assert response.status_code == 400
    assert "expected a JSON object" in response.get_json()["error"]
    assert stored(core) == (0, 0)


@pytest.mark.parametrize("body", [b'"ticket"', b"42", b"null", b""])
def test_json_scalar_or_empty_body_gets_400(client, core, body, hooks):
    """A scalar or an empty body gets 400 with an error."""
    response = hooks.zendesk(body)
    assert response.status_code == 400
    assert response.get_json()["error"]
    assert stored(core) == (0, 0)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda p: p["detail"].pop("id"), "detail.id"),
        (lambda p: p.pop("detail"), "detail.id"),
        (lambda p: p.update(detail="5141"), "detail.id"),
        (lambda p: p.pop("id"), "id"),
        (lambda p: p.update(id=12345), "id"),
        (lambda p: p.update(event=[]), "event"),
    ],
    ids=["no-detail-id", "no-detail", "detail-string", "no-id", "numeric-id", "event-list"],
)
def test_subscription_missing_what_it_must_carry_gets_400_naming_the_field(
    client, core, change, named, hooks
):
    """A ticket.created event without the ticket id or event id gets 400 naming the field."""
    payload = json.loads(fixture_bytes("ticket_created__mail.json"))
    change(payload)
    response = hooks.zendesk(json.dumps(payload).encode())
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(named + ":")
    assert stored(core) == (0, 0)


def test_comment_event_without_a_comment_gets_400(client, core, hooks):
    """ticket.comment_added without event.comment gets 400 naming event.comment."""
    payload = json.loads(fixture_bytes("ticket_comment_added.json"))
    payload["event"] = {}
    response = hooks.zendesk(json.dumps(payload).encode())
    assert response.status_code == 400
    assert "event.comment" in response.get_json()["error"]
    assert stored(core) == (0, 0)


def test_trigger_body_without_a_ticket_id_gets_400(client, core, hooks):
    """A trigger body whose ticket has no id gets 400 telling the admin what to add."""
    payload = json.loads(fixture_bytes("trigger_ticket_created.json"))
    del payload["ticket"]["id"]
    response = hooks.zendesk(json.dumps(payload).encode())
    assert response.status_code == 400
    assert "ticket.id" in response.get_json()["error"]
    assert stored(core) == (0, 0)


def test_json_object_of_no_known_shape_gets_400(client, core, hooks):
    """An object that is neither a subscription payload nor a trigger body gets 400."""
    response = hooks.zendesk(b'{"ticket_id": 5141}')
    assert response.status_code == 400
    assert "body:" in response.get_json()["error"]
    assert stored(core) == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        fixture_bytes("ticket_created__mail.json").replace(b"Hi, I was", b"Hi, I w\xe9s"),
        fixture_bytes("ticket_created.json").decode().encode("utf-16"),
        fixture_bytes("ticket_created.json").decode().encode("utf-32"),
        b"\xff\xfe\x00\x00garbage",
    ],
    ids=["latin-1", "utf-16", "utf-32", "bytes"],
)
def test_body_that_is_not_utf8_gets_400(client, core, body, hooks):
    """JSON must be UTF-8 (RFC 8259): any other encoding gets 400 and is not stored."""
    response = hooks.zendesk(body)
    assert response.status_code == 400
    assert "UTF-8" in response.get_json()["error"]
    assert stored(core) == (0, 0)


# -- ignored events -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "event_type"),
    [
        (fixture_bytes("ticket_priority_changed.json"), "ticket.priority_changed"),
        (
            b'{"type":"zen:event-type:user.created","account_id":22129848,'
            b'"id":"1c9e2b8a-0d5f-4e3a-9b7c-6d8e0f2a4c01","time":"2025-01-08T10:12:07Z",'
            b'"zendesk_event_version":"2022-11-06","subject":"zen:user:8447388090777",'
            b'"detail":{"id":"8447388090777","email":"new.user@example.com"},"event":{}}',
            "user.created",
        ),
        (
            fixture_bytes("trigger_ticket_created.json").replace(
                b'"ticket.created"', b'"ticket.deleted"'
            ),
            "ticket.deleted",
        ),
    ],
    ids=["priority_changed", "user.created", "trigger-deleted"],
)
def test_unused_event_type_gets_200_ignored_and_is_not_stored(
    client, core, body, event_type, hooks
):
    """An authentic event Carryover does not use gets 200 {"ignored": type}, nothing stored."""
    response = hooks.zendesk(body)
    assert response.status_code == 200
    assert response.get_json() == {"ignored": event_type}
    assert stored(core) == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        fixture_bytes("ticket_priority_changed.json").replace(
            b'"zen:event-type:ticket.priority_changed"', b'"zen:event-type:a\\nb\\r\\u00e9"'
        ),
        fixture_bytes("trigger_ticket_created.json").replace(b'"ticket.created"', b'"a\\nb"'),
    ],
    ids=["subscription", "trigger"],
)
def test_unused_event_type_with_a_line_break_gets_200_ignored(client, core, body, hooks):
    """An event type with a line break is ignored like any other, not a 500 on its header."""
    response = hooks.zendesk(body)
    assert response.status_code == 200
    assert response.get_json()["ignored"].startswith("a\nb")
    assert response.headers["X-Carryover-Ignored"].startswith("a?b")
    assert stored(core) == (0, 0)


# -- size, routes, methods --------------------------------------------------------------------


def big_ticket(size: int) -> bytes:
    """Return a valid ticket.created body of exactly `size` bytes (padding the description)."""
    payload = json.loads(fixture_bytes("ticket_created__mail.json"))
    payload["detail"]["description"] = ""
    base = len(json.dumps(payload).encode())
    payload["detail"]["description"] = "x" * (size - base)
    body = json.dumps(payload).encode()
    assert len(body) == size
    return body


def test_body_over_one_mebibyte_gets_413_and_is_not_stored(client, core, hooks):
    """A correctly signed body of 1 MiB + 1 byte gets 413 and is not stored."""
    response = hooks.zendesk(big_ticket(1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.get_json()["error"]
    assert stored(core) == (0, 0)


def test_body_of_exactly_one_mebibyte_is_accepted(client, core, hooks):
    """A body of exactly 1 MiB is within the limit and stored."""
    response = hooks.zendesk(big_ticket(1024 * 1024))
    assert response.status_code == 200
    assert stored(core) == (1, 1)


def test_chunked_body_over_one_mebibyte_gets_413_from_the_real_server(app, core):
    """Served by waitress as `carryover serve` does, a chunked body of 2 MiB gets 413 too."""
    body = big_ticket(2 * 1024 * 1024)
    settings = {**validate_section("server", {}, SERVER), "threads": 1}
    server = build_server(app, settings, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        with requests.Session() as session:
            response = session.post(
                f"http://127.0.0.1:{server.effective_port}/hooks/zendesk",
                data=chunks,
                headers=zendesk_headers(body),
                timeout=30,
            )
    finally:
        server.task_dispatcher.shutdown()
        # Close the listener and every channel from the server's own loop: closed from here,
        # a socket can vanish while that loop is in select() (EBADF in its thread).
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 413
    assert stored(core) == (0, 0)


@pytest.mark.parametrize("path", ["/hooks/salesforce", "/hooks/nope", "/hooks/nope/abc"])
def test_unconfigured_plugin_gets_404(client, core, path):
    """A hook of an integration that is not configured (or does not exist) gets 404."""
    body = fixture_bytes("ticket_created__mail.json")
    response = client.post(path, data=body, headers=zendesk_headers(body))
    assert response.status_code == 404
    assert response.get_json()["error"]
    assert stored(core) == (0, 0)


def test_zendesk_hook_without_a_zendesk_section_gets_404(database_url, make_config):
    """With no integrations.zendesk section the Zendesk hook does not exist."""
    core = build_installation(make_config(database_url))
    try:
        client = create_app(core=core).test_client()
        body = fixture_bytes("ticket_created__mail.json")
        response = client.post("/hooks/zendesk", data=body, headers=zendesk_headers(body))
        assert response.status_code == 404
        assert "zendesk" in response.get_json()["error"]
        assert stored(core) == (0, 0)
    finally:
        core.dispose()


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_other_methods_on_the_hook_get_405(client, method):
    """Only POST is served on /hooks/zendesk; other methods get 405 with a JSON error."""
    response = getattr(client, method)("/hooks/zendesk")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert response.get_json()["error"]


# -- robustness -----------------------------------------------------------------------------

ODD_VALUES: list[Any] = [None, 0, -1, 1.5, True, "", "x", [], {}, ["a"], {"id": {}}, "\u0000"]
SUBSCRIPTION_PATHS = [
    "type", "id", "time", "detail", "detail.id", "detail.via", "detail.via.channel",
    "detail.status", "detail.requester_id", "detail.created_at", "event", "event.comment",
    "event.comment.id", "event.comment.author", "event.comment.author.is_staff",
    "event.comment.body", "event.comment.html_body",
]  # fmt: skip
TRIGGER_PATHS = [
    "event", "ticket", "ticket.id", "ticket.via", "ticket.requester", "ticket.requester.email",
    "ticket.latest_comment", "ticket.created_at",
]  # fmt: skip


def put(payload: Any, path: str, value: Any) -> Any:
    """Return a copy of the payload with the value at a dotted path replaced."""
    payload = json.loads(json.dumps(payload))
    *parents, last = path.split(".")
    node = payload
    for step in parents:
        child = node.get(step) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            child = {}
            node[step] = child
        node = child
    node[last] = value
    return payload


def mutations() -> Iterator[tuple[str, bytes]]:
    """Yield (label, body) pairs: truncations, byte damage and odd values at known paths."""
    # Webhook payloads only: fixtures/history/ holds export pages, which are no deliveries.
    for name in sorted(p.name for p in FIXTURES.iterdir() if p.is_file()):
        raw = fixture_bytes(name)
        for cut in range(1, len(raw), max(1, len(raw) // 7)):
            yield f"{name}[:{cut}]", raw[:cut]
        yield f"{name} brace-swapped", raw.replace(b"{", b"[", 2)
        yield f"{name} nul", raw.replace(b":", b":\x00", 1)
    comment = json.loads(fixture_bytes("ticket_comment_added.json"))
    for i, path in enumerate(SUBSCRIPTION_PATHS):
        for j, value in enumerate(ODD_VALUES):
            mutated = put(comment, path, value)
            if path != "id":
                mutated["id"] = f"fuzz-{i}-{j}"
            yield f"comment {path}={value!r}", json.dumps(mutated).encode()
    trigger = json.loads(fixture_bytes("trigger_ticket_created.json"))
    for path in TRIGGER_PATHS:
        for j, value in enumerate(ODD_VALUES):
            mutated = put(trigger, path, value)
            mutated.setdefault("fuzz", j)
            yield f"trigger {path}={value!r}", json.dumps(mutated).encode()
    created = json.loads(fixture_bytes("ticket_created.json"))
    yield "very long event id", json.dumps(put(created, "id", "e" * 5000)).encode()
    yield "event id with NUL", json.dumps(put(created, "id", "abc\u0000def")).encode()
    yield (
        "deep nesting",
        b'{"type":"zen:event-type:ticket.created","id":"d",'
        + (b'"detail":' + b"[" * 5000 + b"]" * 5000 + b"}"),
    )
    yield "5000-digit number", b'{"type":"zen:event-type:ticket.created","id":' + b"7" * 5000 + b"}"
    yield "huge number", b'{"type":"zen:event-type:ticket.created","id":"n","detail":{"id":1e999}}'


def test_no_mutated_delivery_gets_a_5xx_and_no_4xx_stores_anything(client, core, worker, hooks):
    """Damaged, truncated and oddly typed bodies, each validly signed, never get a 5xx."""
    seen = 0
    for label, body in mutations():
        before = stored(core)
        response = hooks.zendesk(body)
        seen += 1
        # Which mutations parse depends on the value: accepted (200) or refused as malformed
        # (400) are both right; a 5xx, a 401 or a 413 never is.
        assert response.status_code in (200, 400), (
            label,
            response.status_code,
            response.data[:300],
        )
        assert response.is_json, label
        if response.status_code == 400:
            assert stored(core) == before, label
            assert response.get_json()["error"], label
        else:
            assert set(response.get_json()) <= {"ignored"}, label
    assert seen > 200
    worker.drain()  # whatever was accepted must not break the worker either


# -- the store --------------------------------------------------------------------------------


def test_accepted_delivery_is_committed_before_the_reply(client, core, database_url, hooks):
    """After the 200, another connection already sees the raw delivery and its event key."""
    body = fixture_bytes("ticket_created.json")
    assert hooks.zendesk(body).status_code == 200
    other = make_engine(database_url)
    try:
        with other.connect() as conn:
            row = conn.execute(select(deliveries)).one()
            key = conn.execute(select(delivery_keys.c.key)).scalar_one()
    finally:
        other.dispose()
    assert bytes(row.body) == body
    assert key == "event:cbe4028c-7239-495d-b020-f22348516046"


def test_ids_that_pass_the_luhn_check_are_stored_unchanged(
    client, core, worker, hooks, fake_zendesk
):
    """A requester id that looks like a card number is an id, not card text: it is kept."""
    luhn_id = "8447346622462"  # 13 digits passing the Luhn check, like ~10% of Zendesk ids
    body = zendesk_event("ticket_created__mail.json", requester_id=luhn_id, description="Hi")
    assert hooks.zendesk(body).status_code == 200
    with core.engine.connect() as conn:
        assert bytes(conn.execute(select(deliveries.c.body)).scalar_one()) == body
    worker.drain()
    with core.engine.connect() as conn:
        ids = conn.execute(select(interactions.c.identities)).scalar_one()
    assert ["zendesk_user", luhn_id] in json.loads(ids)


def test_secret_phrase_in_a_description_is_redacted_without_breaking_the_json(
    client, core, worker, hooks, fake_zendesk
):
    """A password in customer text is redacted in the stored body, which still parses."""
    body = zendesk_event(
        "ticket_created__mail.json", description='Login fails, my password is "hunter2",ok'
    )
    assert hooks.zendesk(body).status_code == 200
    with core.engine.connect() as conn:
        kept = bytes(conn.execute(select(deliveries.c.body)).scalar_one())
    assert b"hunter2" not in kept
    assert json.loads(kept)["detail"]["id"] == "5141"
    worker.drain()
    with core.engine.connect() as conn:
        row = conn.execute(select(interactions)).one()
    assert row.external_id == "5141"
    assert "hunter2" not in row.text


def test_trigger_body_with_a_card_number_is_stored_redacted_and_still_processed(
    client, core, worker, hooks, fake_zendesk
):
    """Redacting a trigger body before storage does not make the worker lose its event."""
    body = fixture_bytes("trigger_ticket_created.json").replace(
        b"about the double charge again.", b"about card 4111-1111-1111-1111 again."
    )
    assert hooks.zendesk(body).status_code == 200
    with core.engine.connect() as conn:
        kept = bytes(conn.execute(select(deliveries.c.body)).scalar_one())
    assert b"4111-1111-1111-1111" not in kept
    worker.drain()
    with core.engine.connect() as conn:
        row = conn.execute(select(interactions)).one()
    assert row.external_id == "5160"
    assert row.text == "Customer called about card [card ending 1111] again."
    assert hooks.zendesk(body).status_code == 200  # a retry is still recognised
    with core.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 1


@pytest.mark.parametrize("which", ["unmigrated-sqlite", "unreachable-postgresql"])
def test_store_unavailable_gets_503_with_retry_after(
    tmp_path, fake_zendesk, which, make_config, hooks_for
):
    """When the delivery cannot be committed the sender gets 503 and Retry-After, never 2xx."""
    url = f"sqlite:///{tmp_path / 'empty.db'}" if which.endswith("sqlite") else UNREACHABLE_POSTGRES
    core = build_installation(make_config(url, fake_zendesk.url))
    try:
        client = create_app(core=core).test_client()
        response = hooks_for(client).zendesk(fixture_bytes("ticket_created__mail.json"))
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert "unavailable" in response.get_json()["error"]
    finally:
        core.dispose()


@pytest.fixture
def log_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Stand in for the clock of the throttled logs; tests move it by changing its one item."""
    clock = [1000.0]
    monkeypatch.setattr(throttled_log, "monotonic", lambda: clock[0])
    return clock


@pytest.mark.parametrize("which", OUTAGES)
def test_a_store_outage_logs_one_line_per_interval_without_a_traceback(
    tmp_path, fake_zendesk, which, caplog, log_clock, make_config, hooks_for
):
    """In an outage every delivery gets 503; the log gets one line a window, no traceback."""
    url = f"sqlite:///{tmp_path / 'empty.db'}" if which.endswith("sqlite") else UNREACHABLE_POSTGRES
    core = build_installation(make_config(url, fake_zendesk.url))
    body = fixture_bytes("ticket_created__mail.json")
    try:
        client = create_app(core=core).test_client()
        with caplog.at_level(logging.INFO):
            answers = [hooks_for(client).zendesk(body) for _ in range(REFUSED_IN_AN_OUTAGE)]
            assert {(a.status_code, a.headers["Retry-After"]) for a in answers} == {(503, "30")}
            assert len(caplog.records) == 1  # for 50 refusals within the window
            log_clock[0] += REFUSAL_LOG_INTERVAL_S
            assert hooks_for(client).zendesk(body).status_code == 503
    finally:
        core.dispose()
    first, second = caplog.records
    prefix = "could not store a zendesk delivery (answered 503): "
    assert first.getMessage().startswith(prefix + OUTAGES[which])
    assert "\n" not in first.getMessage() and "[SQL" not in first.getMessage()
    assert first.levelno == logging.ERROR and not first.exc_info
    assert second.getMessage() == first.getMessage() + (
        f" ({REFUSED_IN_AN_OUTAGE - 1} more in the 10 s since the last such line)"
    )
    assert "Traceback" not in caplog.text


def test_a_failure_that_is_not_the_stores_is_logged_with_its_traceback_once_a_window(
    client, monkeypatch, caplog, log_clock, hooks
):
    """A program error in the inbox gets 503 too, and its traceback once per window."""

    def commit(self, batch):
        raise ValueError("a bug in the inbox")

    monkeypatch.setattr(DeliveryInbox, "_commit", commit)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert hooks.zendesk(fixture_bytes("ticket_created__mail.json")).status_code == 503
    [line] = caplog.records
    assert line.getMessage() == "could not store a zendesk delivery (answered 503)"
    assert line.exc_info is not None and line.exc_info[0] is ValueError


def test_redelivery_of_the_same_event_gets_200_and_adds_nothing(client, core, hooks):
    """A redelivery of the same event id, signed anew, gets 200 and adds no row or key."""
    body = zendesk_event("ticket_created__mail.json")
    assert hooks.zendesk(body).status_code == 200
    later = stamp(timedelta(seconds=1))
    assert hooks.zendesk(body, timestamp=later).status_code == 200
    assert stored(core) == (1, 1)


def nested_past_the_redaction_walk() -> bytes:
    """Return a trigger body whose card number sits 600 lists deep in the description."""
    description = "[" * 600 + '"\\u0041 4111 1111 1111 1111"' + "]" * 600
    return (
        b'{"event": "ticket.created", "ticket": {"id": "1", "description": '
        + description.encode()
        + b"}}"
    )


def test_a_deeply_nested_body_is_stored_with_its_card_number_redacted(client, core, hooks):
    """A trigger body nested past the redaction walk is redacted as text: accepted, no card.

    Its escape sends it down the full path; too deep to walk, it is redacted as raw text,
    where the candidate from "0041" (the escape's digits) overlaps the card and fails the
    Luhn check: the card after it must still be found.
    """
    response = hooks.zendesk(nested_past_the_redaction_walk())
    assert (response.status_code, response.get_json()) == (200, {})
    assert stored(core) == (1, 1)
    with core.engine.connect() as conn:
        body = conn.execute(select(deliveries.c.body)).scalar_one()
    text = bytes(body).decode() if not isinstance(body, str) else body
    assert "4111 1111 1111 1111" not in text
    assert "[card ending 1111]" in text
