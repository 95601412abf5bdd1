"""What an operator sees of upstream faults: /readyz, the overview and the integration pages."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from conftest import (
    AGENT_KEY,
    ZENDESK_SECRET,
    ZENDESK_TOKEN,
    fixture_bytes,
    post_zendesk,
)
from flask.testing import FlaskClient
from sqlalchemy import select, update

from middleware.core import Carryover
from middleware.store import deliveries, upstream_state, utcnow, writes
from middleware.worker import Worker


@pytest.fixture
def queued_note(client: FlaskClient, worker: Worker) -> None:
    """Ann wrote twice: both deliveries are processed, the note on ticket 5149 is queued."""
    post_zendesk(client, fixture_bytes("ticket_created__mail.json"))
    post_zendesk(client, fixture_bytes("ticket_created__facebook_message.json"))
    for row in worker.core.inbox.claim(worker.owner, 30, 10):
        worker._process(row)


def make_due(core: Carryover) -> None:
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


def blocked_until(core: Carryover) -> str:
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
