"""The worker: leases, upstream limits, retries, dead letters, replay, writes at most once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from devkit.simulators.zendesk import FakeZendesk
from middleware.cli import main
from middleware.installation import Installation, build_installation
from middleware.notes.outbox import ATTEMPTING, Outbox
from middleware.process import pipeline
from middleware.process.worker import Worker
from middleware.store.queue import DEAD, DONE, PENDING
from middleware.store.tables import (
    deliveries,
    delivery_customers,
    delivery_records,
    interactions,
    upstream_state,
    utcnow,
    writes,
)
from tests.actions import ConfigFactory, Hooks
from tests.payloads import fixture_bytes


def queue_second_ticket_note(client, worker) -> None:
    """Post two tickets of one customer and process the deliveries, leaving the note queued."""
    Hooks(client).zendesk(fixture_bytes("ticket_created__mail.json"))
    Hooks(client).zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    for row in worker.core.inbox.claim(worker.owner, 30, 10):
        worker._process(row)


def the_write(core: Installation):
    with core.engine.connect() as conn:
        return conn.execute(select(writes)).one()


def make_due(core: Installation) -> None:
    """Pretend the clock moved on: every queued row is due now, every pause is over."""
    past = utcnow() - timedelta(seconds=1)
    long_ago = utcnow() - timedelta(days=1)
    with core.engine.begin() as conn:
        conn.execute(update(writes).values(next_attempt_at=past))
        conn.execute(
            update(writes).where(writes.c.attempted_at.is_not(None)).values(attempted_at=long_ago)
        )
        conn.execute(update(deliveries).values(next_attempt_at=past))
        conn.execute(update(upstream_state).values(blocked_until=past))
    core.health._forget()


def kill_worker_mid_write(core: Installation, reached_zendesk: bool, ago_s: float = 3600) -> None:
    """Leave the queued note as a killed worker would: attempting, its lease run out.

    The attempt began `ago_s` ago: by default long enough for its outcome to have settled.
    """
    row = core.outbox.claim("killed-worker", 30, 1)[0]
    attempted_at = utcnow() - timedelta(seconds=ago_s)
    core.outbox.touch(row.id, "killed-worker", status=ATTEMPTING, attempted_at=attempted_at)
    if reached_zendesk:
        core.registry.get("zendesk").write_note(row.target_ref, row.body)
    with core.engine.begin() as conn:
        conn.execute(update(writes).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def test_429_waits_for_retry_after_without_spending_an_attempt(client, worker, fake_zendesk, core):
    """A 429 on the note reschedules it after Retry-After; the note is written once later."""
    queue_second_ticket_note(client, worker)
    fake_zendesk.fail_next(429, headers={"Retry-After": "37"}, body={"error": "TooManyRequests"})
    worker.drain()

    row = the_write(core)
    assert row.status == PENDING
    assert row.attempts == 0
    assert "429" in row.last_error or "rate" in row.last_error.lower()
    wait = (row.next_attempt_at - utcnow()).total_seconds()
    assert 30 < wait <= 37
    assert fake_zendesk.notes(5149) == []
    assert worker.drain() == 0  # not due yet

    make_due(core)
    worker.drain()
    assert len(fake_zendesk.notes(5149)) == 1
    assert the_write(core).status == DONE


def test_server_errors_retry_until_retry_for_s_then_dead_letter_then_replay(
    client, worker, fake_zendesk, core, capsys, tmp_path, database_url
):
    """5xx answers are retried with backoff for retry_for_s, then dead; replay writes once."""
    queue_second_ticket_note(client, worker)
    fake_zendesk.fail_next(503, count=100, body={"error": "Unavailable"})
    for _ in range(core.config.worker["max_attempts"] * 2):  # many tries: still waiting
        make_due(core)
        worker.drain()
    row = the_write(core)
    assert row.status == PENDING
    assert row.attempts == core.config.worker["max_attempts"] * 2
    assert "503" in row.last_error
    with core.engine.begin() as conn:  # the upstream has now failed for retry_for_s
        since = utcnow() - timedelta(seconds=core.config.worker["retry_for_s"])
        conn.execute(update(writes).values(failing_since=since))
    make_due(core)
    worker.drain()
    row = the_write(core)
    assert row.status == DEAD
    assert "503" in row.last_error

    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {database_url}\n")
    assert main(["deliveries", "list", "--config", str(config), "--status", "dead"]) == 0
    listed = capsys.readouterr().out
    assert f"out:{row.id}" in listed and "dead" in listed

    with fake_zendesk._lock:
        fake_zendesk._failures.clear()
    assert (
        main(["deliveries", "replay", f"out:{row.id}", "in:999999", "--config", str(config)]) == 1
    )
    told = capsys.readouterr()
    assert "1 queued again" in told.out
    assert "no such delivery or write: in:999999" in told.err
    with core.engine.begin() as conn:
        conn.execute(update(writes).values(status=DEAD))
    assert main(["deliveries", "replay", "--dead", "--config", str(config)]) == 0
    assert "1 queued again" in capsys.readouterr().out
    make_due(core)  # Zendesk's pause after its last 503 is over
    worker.drain()
    assert len(fake_zendesk.notes(5149)) == 1
    assert the_write(core).status == DONE


def test_write_cut_off_after_reaching_zendesk_is_not_repeated(client, worker, fake_zendesk, core):
    """A worker killed after the PUT but before recording it: the next one finds the marker."""
    queue_second_ticket_note(client, worker)
    kill_worker_mid_write(core, reached_zendesk=True)

    worker.drain()
    assert len(fake_zendesk.notes(5149)) == 1
    assert the_write(core).status == DONE


def test_write_cut_off_before_reaching_zendesk_is_done_once(client, worker, fake_zendesk, core):
    """A worker killed before the PUT: the next one checks, finds no marker, and writes."""
    queue_second_ticket_note(client, worker)
    kill_worker_mid_write(core, reached_zendesk=False)

    worker.drain()
    assert len(fake_zendesk.notes(5149)) == 1
    searched = [p for m, p, *_ in fake_zendesk.requests_log if "/comments" in p and m == "GET"]
    assert searched, "the marker was not checked upstream before retrying"


def test_replaying_a_done_write_does_not_write_again(client, worker, fake_zendesk, core):
    """Replay of a write that already happened finds its marker and writes nothing."""
    queue_second_ticket_note(client, worker)
    worker.drain()
    row = the_write(core)
    assert core.outbox.replay([row.id]) == 1
    worker.drain()
    assert len(fake_zendesk.notes(5149)) == 1


def test_a_lease_held_by_a_dead_worker_is_taken_over(client, core, hooks):
    """A delivery claimed by a worker that died is claimed again when the lease runs out."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    assert len(core.inbox.claim("dead-worker", 30, 10)) == 1
    assert core.inbox.claim("other-worker", 30, 10) == []
    with core.engine.begin() as conn:
        conn.execute(update(deliveries).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert [r.id for r in core.inbox.claim("other-worker", 30, 10)] == [1]


@pytest.fixture
def budget_core(
    database_url: str, fake_zendesk: FakeZendesk, make_config: ConfigFactory
) -> Iterator[Installation]:
    """An installation allowed two ticket updates a minute."""
    config = make_config(database_url, fake_zendesk.url, {"ticket_updates_per_minute": 2})
    built = build_installation(config)
    yield built
    built.dispose()


def test_ticket_updates_stay_under_the_per_minute_budget(budget_core, fake_zendesk):
    """With a budget of 2 a minute, a third and fourth note wait for the next minute."""
    with budget_core.engine.begin() as conn:
        for ticket in (5141, 5149, 5158, 5160):
            interaction = conn.execute(interactions.insert().values(
                source="zendesk", external_id=str(ticket), kind="ticket", channel="email",
                occurred_at=utcnow(), updated_at=utcnow(), identities="[]",
            )).inserted_primary_key[0]  # fmt: skip
            Outbox.enqueue(conn, budget_core.markers, "zendesk", str(ticket), interaction,
                           "summary", f"note {ticket}")  # fmt: skip

    Worker(budget_core, name="w").drain()
    written = [t for t in (5141, 5149, 5158, 5160) if fake_zendesk.notes(t)]
    assert len(written) == 2
    with budget_core.engine.connect() as conn:
        waiting = conn.execute(select(writes).where(writes.c.status == PENDING)).all()
    assert len(waiting) == 2
    for row in waiting:
        wait = (row.next_attempt_at - utcnow()).total_seconds()
        assert 50 < wait <= 61
        assert row.attempts == 0


def test_429_on_the_marker_check_keeps_the_check_owed(client, worker, fake_zendesk, core):
    """A 429 while looking for the marker does not turn an uncertain write into a fresh one."""
    queue_second_ticket_note(client, worker)
    kill_worker_mid_write(core, reached_zendesk=True)

    fake_zendesk.fail_next(429, headers={"Retry-After": "5"}, body={"error": "TooManyRequests"})
    worker.drain()
    assert the_write(core).status == ATTEMPTING
    make_due(core)
    worker.drain()
    assert len(fake_zendesk.notes(5149)) == 1
    assert the_write(core).status == DONE


def test_a_write_whose_lease_was_taken_over_is_left_to_the_new_holder(
    client, worker, fake_zendesk, core
):
    """A worker that lost its lease while busy does not write the note the new holder wrote."""
    queue_second_ticket_note(client, worker)
    stale = core.outbox.claim("slow-worker", 30, 1)[0]
    with core.engine.begin() as conn:
        conn.execute(update(writes).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    worker.drain()  # the lease ran out: this worker takes the write over and does it
    assert len(fake_zendesk.notes(5149)) == 1

    Worker(core, name="slow-worker")._write(stale)  # the slow worker reaches its stale copy
    assert len(fake_zendesk.notes(5149)) == 1


@pytest.mark.parametrize("retry_after", ["inf", "1e12", "nan", "soon"])
def test_an_absurd_retry_after_is_bounded(client, worker, fake_zendesk, core, retry_after):
    """Retry-After values that are infinite, huge or not numbers wait at most an hour."""
    queue_second_ticket_note(client, worker)
    fake_zendesk.fail_next(429, headers={"Retry-After": retry_after}, body={"error": "x"})
    worker.drain()
    row = the_write(core)
    assert row.status == PENDING
    assert 0 < (row.next_attempt_at - utcnow()).total_seconds() <= 3600


# -- fitting a note into an upstream's size limit -------------------------------------------


def test_a_note_within_the_limit_is_kept_whole_with_its_marker():
    """A short note is only given its marker line."""
    from middleware.notes.outbox import fit_note, with_marker

    assert fit_note("Hello\nworld", "co-1-summary", 4000) == with_marker(
        "Hello\nworld", "co-1-summary"
    )


@pytest.mark.parametrize("limit", [120, 121, 122, 123, 200, 4000])
def test_a_long_note_is_cut_at_a_line_within_the_byte_limit_and_keeps_its_marker(limit):
    """A note over the limit is cut between lines, counted in UTF-8 bytes, marker kept."""
    from middleware.notes.outbox import MARKER_PATTERN, fit_note

    lines = [f"line {i}: Überweisung — ✓ {'é' * (i % 7 + 1)}" for i in range(400)]
    fitted = fit_note("\n".join(lines), "co-77-summary", limit)
    assert len(fitted.encode("utf-8")) <= limit
    assert MARKER_PATTERN.search(fitted.splitlines()[-1]).group(1) == "co-77-summary"
    kept = fitted.split("\n[… shortened")[0].splitlines()
    assert kept and kept == lines[: len(kept)]  # whole lines only, in order


def test_a_single_long_line_is_cut_at_a_space_and_never_inside_a_character():
    """Without a line break to cut at, the cut falls at a space; multi-byte text stays valid."""
    from middleware.notes.outbox import clean_cut

    text = " ".join(["wörd"] * 2000)
    cut = clean_cut(text, 1001)
    assert len(cut.encode("utf-8")) <= 1001
    assert cut.endswith("wörd") and set(cut.split(" ")) == {"wörd"}
    assert clean_cut("€" * 10, 7) == "€€"  # 3 bytes each: two fit, the third is not split


def test_a_permanent_refusal_is_a_dead_letter_after_its_one_try(client, core, worker,
                                                                 fake_zendesk, hooks):  # fmt: skip
    """A 403 is not retried; the dead letter counts the try that met it.

    The one call the try makes may be the lookup made ahead of the processing: the
    processing then takes its refusal, and asks no second time.
    """
    fake_zendesk.fail_next(403, body={"error": "Forbidden"})
    assert hooks.zendesk(fixture_bytes("ticket_created__mail.json")).status_code == 200
    worker.drain()
    (row,) = core.inbox.listing()
    assert row.status == DEAD and row.attempts == 1
    assert "403" in row.last_error


class RecordedPauses:
    """Stands in for Worker.stopping: records the pauses instead of sleeping."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    def wait(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        return False

    def is_set(self) -> bool:
        return False


def test_the_embedded_worker_gives_way_while_webhooks_arrive(
    client, core, worker, monkeypatch, hooks
):
    """After each item it pauses as long as the item took, only while senders are waiting."""
    # A window wide enough that a slow machine still drains within it after the webhook.
    monkeypatch.setattr("middleware.process.worker.GIVE_WAY_WINDOW_S", 30.0)
    worker.stopping = RecordedPauses()
    worker.give_way(0.004)
    assert worker.stopping.pauses == []  # no webhook yet: a worker process never pauses
    body = fixture_bytes("ticket_created__mail.json")
    assert hooks.zendesk(body).status_code == 200
    worker.drain()
    assert len(worker.stopping.pauses) >= 1 and all(p > 0 for p in worker.stopping.pauses)
    core.webhook_seen_at -= 60.0  # the last webhook is older than the window: none waits
    worker.stopping.pauses.clear()
    worker.give_way(0.004)
    assert worker.stopping.pauses == []


def test_a_delivery_whose_lease_is_taken_over_mid_way_records_nothing(
    hooks, core, worker, fake_zendesk, monkeypatch
):
    """A worker that loses its lease while processing commits neither the record nor the settle."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    row = core.inbox.claim(worker.owner, 30, 1)[0]
    prepare = pipeline.prepare_event

    def taken_over_meanwhile(*args, **kwargs):
        with core.engine.begin() as conn:  # another worker claims the row meanwhile
            conn.execute(update(deliveries).values(lease_owner="other-worker"))
        return prepare(*args, **kwargs)

    monkeypatch.setattr(pipeline, "prepare_event", taken_over_meanwhile)
    worker._process(row)
    with core.engine.connect() as conn:
        assert conn.execute(select(interactions)).all() == []
        stored = conn.execute(select(deliveries)).one()
    assert (stored.status, stored.lease_owner) == (PENDING, "other-worker")


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "without-returning"])
def test_a_claim_leases_the_oldest_due_rows_and_returns_them_in_order(
    hooks, core, monkeypatch, returning
):
    """A claim returns the due rows oldest first, each leased to the claimer, with or without
    UPDATE … RETURNING (an SQLite older than 3.35)."""
    monkeypatch.setattr(core.engine.dialect, "update_returning", returning)
    for name in ("ticket_created__mail.json", "ticket_created__facebook_message.json",
                 "ticket_comment_added.json"):  # fmt: skip
        hooks.zendesk(fixture_bytes(name))
    claimed = core.inbox.claim("w", 30, 2)
    assert [row.id for row in claimed] == [1, 2]
    assert {row.lease_owner for row in claimed} == {"w"}
    assert all(row.lease_expires_at > utcnow() + timedelta(seconds=25) for row in claimed)
    assert [row.id for row in core.inbox.claim("v", 30, 10)] == [3]


def test_a_processed_delivery_is_remembered_by_its_records_and_its_customer(
    client, worker, core, fake_zendesk
):
    """Each delivery is found by what it recorded and by whom it spoke of (on PostgreSQL in
    one statement), once each: remembering it again adds nothing."""
    hooks = Hooks(client)
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()
    with core.engine.connect() as conn:
        stored = conn.execute(select(deliveries.c.id).order_by(deliveries.c.id)).scalars().all()
        records = conn.execute(
            select(delivery_records.c.delivery_id, interactions.c.external_id).join_from(
                delivery_records, interactions,
                interactions.c.id == delivery_records.c.interaction_id,
            )
        ).all()  # fmt: skip
        spoke = conn.execute(select(delivery_customers.c.delivery_id,
                                    delivery_customers.c.customer_id)).all()  # fmt: skip
        customer = conn.execute(select(interactions.c.customer_id)).scalars().first()
    assert sorted(records) == sorted(zip(stored, ["5141", "5149"], strict=True))
    assert sorted(spoke) == [(delivery, customer) for delivery in stored]
    with core.engine.begin() as conn:  # again, as a replay would: nothing twice
        first = conn.execute(select(interactions.c.id).order_by(interactions.c.id)).scalar()
        pipeline.remember(conn, [(stored[0], customer, first)])
    with core.engine.connect() as conn:
        assert len(conn.execute(select(delivery_records)).all()) == 2
        assert len(conn.execute(select(delivery_customers)).all()) == 2
