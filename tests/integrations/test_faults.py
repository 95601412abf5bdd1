"""What an operator sees of upstream faults: /readyz, the overview and the integration pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import insert, select, update

from devkit.simulators.zendesk import FakeZendesk
from middleware.admin.accounts import create_admin
from middleware.admin.figures import overview_figures
from middleware.installation import Installation, build_installation
from middleware.integrations.upstreams import UpstreamStatus
from middleware.notes.outbox import Outbox
from middleware.process.worker import Worker
from middleware.store.tables import (
    deliveries,
    interactions,
    reading,
    upstream_state,
    utcnow,
    writes,
)
from middleware.web.app import create_app
from tests.actions import ConfigFactory, Hooks
from tests.payloads import fixture_bytes
from tests.values import ADMIN_PASSWORD, AGENT_KEY, ZENDESK_SECRET, ZENDESK_TOKEN


@pytest.fixture
def queued_note(client: FlaskClient, worker: Worker, hooks: Hooks) -> None:
    """Ann wrote twice: both deliveries are processed, the note on ticket 5149 is queued."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    for row in worker.core.inbox.claim(worker.owner, 30, 10):
        worker._process(row)


def make_due(core: Installation) -> None:
    """Move the clock on: every queued row is due, every pause is over."""
    past = utcnow() - timedelta(seconds=1)
    with core.engine.begin() as conn:
        conn.execute(update(writes).values(next_attempt_at=past))
        conn.execute(update(deliveries).values(next_attempt_at=past))
        conn.execute(update(upstream_state).values(blocked_until=past))
    core.health._forget()


def page_text(client: FlaskClient, path: str) -> str:
    """Return a page's text with its tags and runs of white space taken out."""
    html = client.get(path).get_data(as_text=True)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def blocked_until(core: Installation) -> str:
    """Return when Zendesk's pause ends, as the pages write it."""
    with core.engine.connect() as conn:
        until = conn.execute(select(upstream_state.c.blocked_until)).scalar_one()
    return until.strftime("%H:%M:%S") + " UTC"


# -- /readyz ---------------------------------------------------------------------------------
def test_readyz_during_a_429_pause_is_degraded_but_still_200(
    queued_note, client, worker, fake_zendesk, core
):
    """A 429 pauses Zendesk: /readyz stays 200 and says degraded, paused, and the note waiting."""
    fake_zendesk.fail_next(429, headers={"Retry-After": "37"}, body={"error": "TooManyRequests"})
    worker.drain()

    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["degraded_upstreams"] == ["zendesk"]
    zendesk = body["upstreams"]["zendesk"]
    assert zendesk["state"] == "paused"
    assert 30 < zendesk["paused_for_s"] <= 37
    assert zendesk["reason"] == "Zendesk answered 429"
    assert zendesk["last_error"] == "Zendesk answered 429"
    assert zendesk["waiting"]["notes"] == 1
    assert zendesk["waiting"]["notes_by_reason"] == {
        "pause": 1, "budget": 0, "outcome": 0, "retry": 0, "queued": 0,
    }  # fmt: skip
    assert zendesk["waiting"]["deliveries"] == 0
    text = response.get_data(as_text=True)
    assert [s for s in (ZENDESK_SECRET, ZENDESK_TOKEN, AGENT_KEY) if s in text] == []


def test_readyz_during_a_run_of_server_errors_counts_them(
    queued_note, client, worker, fake_zendesk, core
):
    """Three 503s in a row: paused, then failing once the pause is over; degraded all along."""
    fake_zendesk.fail_next(503, count=100, body={"error": "Unavailable"})
    for _ in range(3):
        make_due(core)
        worker.drain()

    body = client.get("/readyz").get_json()
    zendesk = body["upstreams"]["zendesk"]
    assert (body["status"], zendesk["state"]) == ("degraded", "paused")
    assert zendesk["failures_in_a_row"] == 3
    assert zendesk["reason"] == "Zendesk answered 503; 3 in a row"
    assert zendesk["waiting"]["notes"] == 1

    make_due(core)  # the pause is over, but nothing has answered since
    body = client.get("/readyz").get_json()
    assert client.get("/readyz").status_code == 200
    assert (body["status"], body["upstreams"]["zendesk"]["state"]) == ("degraded", "failing")


def test_readyz_after_recovery_is_ready_again(queued_note, client, worker, fake_zendesk, core):
    """Once Zendesk answers again and the note is written, /readyz is ready, nothing waiting."""
    fake_zendesk.fail_next(503, count=2, body={"error": "Unavailable"})
    for _ in range(4):
        make_due(core)
        worker.drain()
    assert len(fake_zendesk.notes(5149)) == 1

    body = client.get("/readyz").get_json()
    assert body["status"] == "ready" and body["degraded_upstreams"] == []
    zendesk = body["upstreams"]["zendesk"]
    assert (zendesk["state"], zendesk["failures_in_a_row"]) == ("ok", 0)
    assert zendesk["waiting"]["notes"] == zendesk["waiting"]["deliveries"] == 0


# -- the overview --------------------------------------------------------------------------------
def test_the_overview_shows_a_paused_upstream_and_what_waits_for_it(
    queued_note, admin_client, worker, fake_zendesk, core
):
    """After a 429 the overview names the pause, when it ends, and the note held by it."""
    fake_zendesk.fail_next(429, headers={"Retry-After": "37"}, body={"error": "TooManyRequests"})
    worker.drain()
    resumes = blocked_until(core)

    text = page_text(admin_client, "/admin/")
    assert re.search(r"Zendesk is paused for another 3\d\.\d s after “Zendesk answered 429”: "
                     r"no calls to it until " + resumes, text)  # fmt: skip
    assert "Webhooks are still accepted and stored; 1 note waits for Zendesk." in text
    assert re.search(r"paused for another 3\d\.\d s after “Zendesk answered 429” resumes at "
                     + resumes, text)  # fmt: skip
    assert "1 note until Zendesk resumes 1 note Zendesk answered 429 " in text
    assert re.search(r"Zendesk answered 429 [\d:]+ UTC \([\d.]+ s ago\), calling the API", text)


def test_overview_lag_counts_the_webhooks_still_waiting(admin_client, core):
    """76 webhooks waiting 32 s beside 10 done in 0.5 s: the lag reads 32 s, not 0.5 s."""
    now = utcnow()
    row = {"plugin": "zendesk", "headers": "{}", "body": b"{}", "event_keys": "[]",
           "attempts": 0, "trail": "[]"}  # fmt: skip
    done_at = now - timedelta(minutes=5)
    with core.engine.begin() as conn:
        conn.execute(insert(deliveries), [
            {**row, "status": "done", "received_at": done_at, "next_attempt_at": done_at,
             "finished_at": done_at + timedelta(seconds=0.5)} for _ in range(10)
        ])  # fmt: skip
        conn.execute(insert(deliveries), [
            {**row, "status": "pending", "received_at": now - timedelta(seconds=32),
             "next_attempt_at": now + timedelta(minutes=1)} for _ in range(76)
        ])  # fmt: skip

    with reading(core.engine) as conn:
        figures = overview_figures(conn)
    assert figures.lag_median_s is not None and 32 <= figures.lag_median_s < 40
    assert figures.lag_max_s is not None and figures.lag_max_s >= 32
    assert figures.backlog == 76
    text = page_text(admin_client, "/admin/")
    assert re.search(r"3\d\.\d s median lag of webhooks, finished and still waiting "
                     r"\(max 3\d\.\d s\)", text)  # fmt: skip
    assert re.search(r"76 webhooks waiting, oldest 3\d\.\d s", text)


def queue_failed_note(
    core: Installation, ticket: int, error: str, ago: timedelta, status: str = "pending"
) -> None:
    """Queue a note on a ticket that met `error` that long ago (or leave it dead)."""
    at = utcnow() - ago
    with core.engine.begin() as conn:
        interaction = conn.execute(insert(interactions).values(
            source="zendesk", external_id=str(ticket), kind="ticket", channel="email",
            occurred_at=at, updated_at=at, identities="[]",
        )).inserted_primary_key[0]  # fmt: skip
        conn.execute(insert(writes).values(
            target="zendesk", target_ref=str(ticket), interaction_id=interaction,
            purpose="summary", marker=f"co-{ticket}", body="note", status=status, attempts=1,
            next_attempt_at=utcnow() + timedelta(minutes=5), created_at=at, attempted_at=at,
            failing_since=at, last_error=error,
        ))  # fmt: skip


def test_the_latest_error_is_the_newest_not_the_largest_text(admin_client, core):
    """An older "503" and a newer "404": the overview and the integration show the 404."""
    queue_failed_note(core, 5141, "Zendesk answered 503", ago=timedelta(hours=2))
    queue_failed_note(core, 5149, "Zendesk answered 404 (ticket 5149 is gone)",
                      ago=timedelta(minutes=3), status="dead")  # fmt: skip

    overview = page_text(admin_client, "/admin/")
    assert re.search(r"2 notes Zendesk answered 404 \(ticket 5149 is gone\) \d\d:\d\d:\d\d UTC "
                     r"\(3 min ago\), writing a note", overview)  # fmt: skip
    assert "Zendesk answered 503" not in overview
    integration = page_text(admin_client, "/admin/integrations/zendesk")
    assert "Latest error Zendesk answered 404 (ticket 5149 is gone)" in integration
    assert "Zendesk answered 503" not in integration
    listing = page_text(admin_client, "/admin/integrations/")
    assert "Zendesk answered 404 (ticket 5149 is gone)" in listing


def test_the_integration_page_shows_the_newer_of_webhook_and_note_errors(
    admin_client, worker, fake_zendesk, core, hooks
):
    """A webhook that failed after a note did: the webhook's error is the latest, by time."""
    queue_failed_note(core, 5141, "Zendesk answered 500", ago=timedelta(hours=1))
    fake_zendesk.fail_next(403, body={"error": "Forbidden"})
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()

    text = page_text(admin_client, "/admin/integrations/zendesk")
    assert re.search(r"Latest error Zendesk answered 403 \(Forbidden\) [\d:]+ UTC "
                     r"\([\d.]+ s ago\), processing a webhook", text)  # fmt: skip
    assert "Zendesk answered 500" not in text


def test_an_inbound_failure_is_listed_among_upstream_errors(
    admin_client, worker, fake_zendesk, core, hooks
):
    """A webhook whose Zendesk lookup was refused shows in the overview's upstream errors."""
    fake_zendesk.fail_next(403, body={"error": "Forbidden"})
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()

    with reading(core.engine) as conn:
        [zendesk] = overview_figures(conn, ["zendesk"]).upstreams
    assert (zendesk.webhooks_with_error, zendesk.notes_with_error) == (1, 0)
    text = page_text(admin_client, "/admin/")
    assert re.search(r"Zendesk working nothing 1 webhook Zendesk answered 403 \(Forbidden\) "
                     r"[\d:]+ UTC \([\d.]+ s ago\), processing a webhook", text)  # fmt: skip


# -- the note budget: a throttle, not an error --------------------------------------------------
@pytest.fixture
def budget_core(
    database_url: str, fake_zendesk: FakeZendesk, make_config: ConfigFactory
) -> Iterator[Installation]:
    """An installation allowed two ticket updates a minute."""
    config = make_config(database_url, fake_zendesk.url, {"ticket_updates_per_minute": 2})
    built = build_installation(config)
    yield built
    built.dispose()


def test_notes_held_by_the_note_budget_are_not_errors(budget_core, fake_zendesk, admin_for):
    """Two of four notes wait for the budget: shown as a throttle, never as an error."""
    with budget_core.engine.begin() as conn:
        for ticket in (5141, 5149, 5158, 5160):
            interaction = conn.execute(interactions.insert().values(
                source="zendesk", external_id=str(ticket), kind="ticket", channel="email",
                occurred_at=utcnow(), updated_at=utcnow(), identities="[]",
            )).inserted_primary_key[0]  # fmt: skip
            Outbox.enqueue(conn, budget_core.markers, "zendesk", str(ticket), interaction,
                           "summary", f"note {ticket}")  # fmt: skip
    Worker(budget_core, name="w").drain()
    with budget_core.engine.begin() as conn:  # an error met before the budget held it back
        conn.execute(update(writes).where(writes.c.waiting_for == "budget")
                     .values(last_error="Zendesk answered 503"))  # fmt: skip

    client = create_app(core=budget_core).test_client()
    body = client.get("/readyz").get_json()
    assert body["status"] == "ready"
    assert body["upstreams"]["zendesk"]["waiting"]["notes_by_reason"]["budget"] == 2
    create_admin(budget_core.engine, "ada", ADMIN_PASSWORD)
    admin_for(client).log_in()
    text = page_text(client, "/admin/")
    assert "2 notes wait for the note budget of Zendesk" in text
    assert "This is a throttle, not an error" in text
    assert "Zendesk working 2 notes for the note budget none none" in text
    assert "503" not in text and "is paused" not in text
    notes = page_text(client, "/admin/deliveries/?direction=out")
    assert notes.count("waits for the note budget (a throttle, not an error)") == 2
    assert "503" not in notes


@pytest.mark.parametrize(
    ("blocked_for_s", "failures", "state"),
    [(30, 3, "paused"), (30, 0, "paused"), (-30, 3, "failing"), (None, 1, "failing"),
     (None, 0, "ok"), (-30, 0, "ok")],
)  # fmt: skip
def test_an_upstream_is_paused_while_blocked_else_failing_after_a_failure(
    blocked_for_s, failures, state
):
    """An upstream is paused until blocked_until, then failing while its last call failed."""
    now = utcnow()
    until = now + timedelta(seconds=blocked_for_s) if blocked_for_s is not None else None
    status = UpstreamStatus("zendesk", until, failures, None, None, None, None)
    assert status.state(now) == state


@pytest.mark.parametrize(
    ("error_s", "ok_s", "blocked_s", "state"),
    [(-5, None, None, "refused"), (-5, -10, None, "refused"), (-10, -5, None, "ok"),
     (-5, None, -5 + 37, "paused"), (-50, None, -50 + 37, "ok")],
)  # fmt: skip
def test_an_upstream_whose_last_answer_was_an_error_is_refused_until_a_success(
    error_s, ok_s, blocked_s, state
):
    """A 401 or a failed test is the latest answer until a success; a 429's pause is not one."""
    now = utcnow()
    at = {k: now + timedelta(seconds=v) if v is not None else None
          for k, v in {"error": error_s, "ok": ok_s, "blocked": blocked_s}.items()}  # fmt: skip
    status = UpstreamStatus("zendesk", at["blocked"], 0, None, "Zendesk answered 401",
                            at["error"], at["ok"])  # fmt: skip
    assert status.state(now) == state


def test_a_note_refused_for_its_credentials_shows_zendesk_not_working_until_a_success(
    queued_note, admin_client, worker, fake_zendesk, core
):
    """A 401 on a note: no pause, but the pages and /readyz say it; the next success clears it."""
    fake_zendesk.fail_next(401, body={"error": "Couldn't authenticate you"})
    worker.drain()
    assert core.health.paused_for("zendesk") == 0  # nothing waits for a pause
    page = page_text(admin_client, "/admin/integrations/zendesk")
    assert "Zendesk not working" in page
    assert "Zendesk is not working : its last answer" in page
    assert "refused the credentials" in page
    assert "not working" in page_text(admin_client, "/admin/integrations/")
    assert "Zendesk is not working" in page_text(admin_client, "/admin/")
    body = admin_client.get("/readyz").get_json()
    assert (body["status"], body["upstreams"]["zendesk"]["state"]) == ("degraded", "refused")

    core.registry.get("zendesk").check_connection()  # answered: the token works again
    core.health._forget()
    page = page_text(admin_client, "/admin/integrations/zendesk")
    assert "Zendesk connected" in page and "is not working" not in page
    assert admin_client.get("/readyz").get_json()["status"] == "ready"
