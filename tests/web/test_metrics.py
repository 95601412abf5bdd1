"""GET /metrics: the installation's figures in Prometheus' text format, read by a real
parser, for the allowed networks or the token only."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from devkit.simulators.zendesk import FakeZendesk
from middleware.installation import Installation, build_installation
from middleware.process.worker import Worker
from middleware.store.tables import deliveries, utcnow
from middleware.web.app import create_app
from tests.actions import ConfigFactory, Hooks
from tests.payloads import fixture_bytes, zendesk_headers

WRONG_SECRET = "d3Jvbmdfc2VjcmV0X2Zvcl90ZXN0cw=="
SECOND_TICKET = "ticket_created__facebook_message.json"  # 5149, Ann's second ticket
OUTSIDE = {"REMOTE_ADDR": "203.0.113.9"}
TOKEN = "metrics-token-for-tests"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: FlaskClient, **kwargs) -> Samples:
    """GET /metrics and parse it with Prometheus' own parser: (name, labels) → value."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.data[:300]
    assert response.content_type.startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """Return one sample's value, None when the scrape has no such sample."""
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def app_with(make_config: ConfigFactory, database_url: str) -> Iterator[Callable[..., FlaskClient]]:
    """Return a factory of test clients of apps built with extra configuration."""
    built: list[Installation] = []

    def make(**extra) -> FlaskClient:
        core = build_installation(make_config(database_url, **extra))
        built.append(core)
        return create_app(core=core).test_client()

    yield make
    for core in built:
        core.dispose()


def test_a_scrape_counts_deliveries_refusals_notes_and_upstream_calls(
    client: FlaskClient, hooks: Hooks, worker: Worker, core: Installation,
    fake_zendesk: FakeZendesk,
):  # fmt: skip
    """After two tickets (one note) and a refused delivery, every family says so exactly."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes(SECOND_TICKET))
    body = fixture_bytes("ticket_created__mail.json")
    refused = client.post("/hooks/zendesk", data=body, headers=zendesk_headers(body, WRONG_SECRET))
    assert refused.status_code == 401
    core.refusals.flush()
    worker.drain()
    assert len(fake_zendesk.notes(5149)) == 1

    samples = scrape(client)
    assert value(samples, "carryover_store_up") == 1
    assert value(samples, "carryover_deliveries", integration="zendesk", status="done") == 2
    assert value(samples, "carryover_notes", integration="zendesk", status="done") == 1
    assert value(samples, "carryover_refusals_last_day", integration="zendesk",
                 reason="signature") == 1  # fmt: skip
    for queue in ("inbound", "outbound"):
        assert value(samples, "carryover_queue_depth", queue=queue) == 0
        assert value(samples, "carryover_queue_lag_seconds", queue=queue) == 0
    answered = Counter(str(a.status) for a in fake_zendesk.answered)
    assert answered["200"] + answered["201"] > 0
    counted = {
        labels: count for (name, labels), count in samples.items()
        if name == "carryover_upstream_calls_total"
    }  # fmt: skip
    assert counted == {
        frozenset({("upstream", "zendesk"), ("status", status)}): float(count)
        for status, count in answered.items()
    }
    assert value(samples, "carryover_note_latency_seconds_count", integration="zendesk") == 1
    assert value(samples, "carryover_open_pops") == 0


def test_queue_depth_and_lag_count_the_work_still_waiting(
    client: FlaskClient, hooks: Hooks, worker: Worker, core: Installation
):
    """A webhook waiting two minutes is an inbound depth of 1 and a lag of about 120 s."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    with core.engine.begin() as conn:
        conn.execute(update(deliveries).values(received_at=utcnow() - timedelta(seconds=120)))

    samples = scrape(client)
    assert value(samples, "carryover_queue_depth", queue="inbound") == 1
    lag = value(samples, "carryover_queue_lag_seconds", queue="inbound")
    assert lag is not None and 120 <= lag < 180
    assert value(samples, "carryover_deliveries", integration="zendesk", status="pending") == 1
    assert value(samples, "carryover_queue_depth", queue="outbound") == 0


def test_notes_waiting_for_their_upstream_are_the_outbound_queue(
    client: FlaskClient, hooks: Hooks, worker: Worker, core: Installation, fake_zendesk
):
    """A note queued and not written yet is an outbound depth of 1, and is not timed yet."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes(SECOND_TICKET))
    for row in core.inbox.claim(worker.owner, 30, 10):
        worker._process(row)

    samples = scrape(client)
    assert value(samples, "carryover_queue_depth", queue="outbound") == 1
    assert value(samples, "carryover_notes", integration="zendesk", status="pending") == 1
    assert value(samples, "carryover_note_latency_seconds_count", integration="zendesk") is None


def test_a_429_is_counted_by_its_status(
    client: FlaskClient, hooks: Hooks, worker: Worker, fake_zendesk: FakeZendesk
):
    """An upstream's 429 shows as calls with status 429."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes(SECOND_TICKET))
    fake_zendesk.fail_next(429, headers={"Retry-After": "37"}, body={"error": "TooManyRequests"})
    worker.drain()

    samples = scrape(client)
    assert value(samples, "carryover_upstream_calls_total", upstream="zendesk", status="429") == 1


def test_open_pops_are_counted(client: FlaskClient, core: Installation):
    """Each open screen-pop stream counts until it closes."""
    assert core.live.open_stream() and core.live.open_stream()
    core.live.close_stream()
    assert value(scrape(client), "carryover_open_pops") == 1


def test_listening_says_whether_other_processes_can_wake_this_one(
    client: FlaskClient, core: Installation
):
    """On PostgreSQL, 0 until the listener is connected, then 1; SQLite has no such figure."""
    if not core.wakeups.enabled:
        assert value(scrape(client), "carryover_listening") is None
        return
    assert value(scrape(client), "carryover_listening") == 0
    core.wakeups.start()
    assert core.wakeups.wait_listening(10)
    assert value(scrape(client), "carryover_listening") == 1


def test_a_scrape_from_outside_the_allowed_networks_is_refused(client: FlaskClient):
    """Another address than this host's gets 403 and no figure."""
    response = client.get("/metrics", environ_base=OUTSIDE)
    assert response.status_code == 403
    assert "metrics.allow" in response.get_json()["error"]
    assert b"carryover_" not in response.data


def test_the_token_opens_metrics_to_other_addresses(app_with):
    """With bearer_token set, another address gets the figures with it, 403 without or wrong."""
    client = app_with(metrics={"bearer_token": TOKEN})
    assert client.get("/metrics", environ_base=OUTSIDE).status_code == 403
    wrong = {"Authorization": "Bearer not-the-token"}
    assert client.get("/metrics", environ_base=OUTSIDE, headers=wrong).status_code == 403
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert value(scrape(client, environ_base=OUTSIDE, headers=right), "carryover_store_up") == 1


def test_an_empty_allow_list_needs_the_token_from_everywhere(app_with):
    """allow: [] and a token: even this host needs the token."""
    client = app_with(metrics={"allow": [], "bearer_token": TOKEN})
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_client_behind_a_trusted_proxy_is_the_one_checked(app_with):
    """Behind a trusted proxy, the address it reports decides, not the proxy's own."""
    client = app_with(trusted_proxies=["10.0.0.5"], metrics={"allow": ["192.0.2.0/24"]})
    proxy = {"REMOTE_ADDR": "10.0.0.5"}
    outside = client.get("/metrics", environ_base=proxy,
                         headers={"X-Forwarded-For": "203.0.113.9"})  # fmt: skip
    assert outside.status_code == 403
    inside = client.get("/metrics", environ_base=proxy,
                        headers={"X-Forwarded-For": "192.0.2.10"})  # fmt: skip
    assert inside.status_code == 200
    # From an untrusted peer, X-Forwarded-For is not believed.
    forged = client.get("/metrics", environ_base=OUTSIDE,
                        headers={"X-Forwarded-For": "192.0.2.10"})  # fmt: skip
    assert forged.status_code == 403


def test_metrics_turned_off_is_not_found(app_with):
    """metrics.enabled: false makes /metrics a 404, from this host too."""
    client = app_with(metrics={"enabled": False})
    assert client.get("/metrics").status_code == 404


def test_an_unreadable_store_still_answers_with_the_process_figures(
    tmp_path: Path, make_config: ConfigFactory
):
    """With the store unreadable (no tables), /metrics says store_up 0 and this process's."""
    core = build_installation(make_config(f"sqlite:///{tmp_path / 'empty.db'}"))
    try:
        samples = scrape(create_app(core=core).test_client())
    finally:
        core.dispose()
    assert value(samples, "carryover_store_up") == 0
    assert value(samples, "carryover_open_pops") == 0
    assert not any(name == "carryover_deliveries" for name, _ in samples)


def test_bad_metrics_settings_are_refused(make_config: ConfigFactory):
    """An allow entry that is no address, or an empty token, stops the start naming the key."""
    from middleware.config import ConfigError

    with pytest.raises(ConfigError, match=r"^metrics\.allow: 'prometheus' is not an address"):
        make_config("sqlite://", metrics={"allow": ["prometheus"]})
    with pytest.raises(ConfigError, match=r"^metrics\.bearer_token: empty"):
        make_config("sqlite://", metrics={"bearer_token": " "})
