"""The log: a line per delivery accepted, refused and processed and per note written, with
ids and never a body or a secret; text or JSON, at the configured level."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from middleware.config import ConfigError, parse_config
from middleware.logs import StderrHandler, configure_logging
from middleware.process.worker import Worker
from tests.actions import Hooks
from tests.payloads import fixture_bytes, zendesk_headers

WRONG_SECRET = "d3Jvbmdfc2VjcmV0X2Zvcl90ZXN0cw=="
SECOND_TICKET = "ticket_created__facebook_message.json"  # 5149, Ann's second ticket


def records(caplog: pytest.LogCaptureFixture, outcome: str) -> list[logging.LogRecord]:
    """Return the captured lines of one outcome (accepted, done, dead …)."""
    return [r for r in caplog.records if getattr(r, "outcome", None) == outcome]


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put the root logger's level and handlers back as they were after the test."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_a_signed_webhook_logs_accepted_then_processed_with_its_ids(
    hooks: Hooks, worker: Worker, caplog: pytest.LogCaptureFixture, fake_zendesk
):
    """A stored delivery logs "accepted" with its id, event and ticket, then "processed"."""
    caplog.set_level(logging.INFO)
    assert hooks.zendesk(fixture_bytes("ticket_created__mail.json")).status_code == 200

    [accepted] = records(caplog, "accepted")
    assert accepted.getMessage() == (
        "accepted zendesk delivery in:1: ticket.created (zendesk:ticket:5141)"
    )
    assert accepted.integration == "zendesk"  # type: ignore[attr-defined]
    assert accepted.delivery_id == 1  # type: ignore[attr-defined]
    assert accepted.records == ["zendesk:ticket:5141"]  # type: ignore[attr-defined]
    assert accepted.events == ["ticket.created"]  # type: ignore[attr-defined]

    worker.drain()
    [processed] = records(caplog, "done")
    assert processed.getMessage().startswith("processed zendesk delivery in:1 in ")
    assert processed.getMessage().endswith(" ms: done, 0 notes queued")
    assert processed.delivery_id == 1  # type: ignore[attr-defined]
    assert processed.duration_ms >= 0  # type: ignore[attr-defined]
    assert "charged twice" not in caplog.text.lower()  # nothing of the body
    assert "4111" not in caplog.text


def test_a_redelivery_logs_that_nothing_was_stored(hooks: Hooks, caplog):
    """A sender's retry of a stored delivery logs a line saying nothing new was stored."""
    caplog.set_level(logging.INFO, logger="middleware.ingest.hooks")
    body = fixture_bytes("ticket_created__mail.json")
    hooks.zendesk(body)
    hooks.zendesk(body)
    [again] = records(caplog, "duplicate")
    assert again.getMessage() == (
        "zendesk delivery seen before, nothing stored: ticket.created (zendesk:ticket:5141)"
    )


def test_a_bad_signature_logs_a_refused_line_without_the_body(client, caplog):
    """A badly signed delivery logs "refused" with the integration, reason and address only."""
    caplog.set_level(logging.INFO)
    body = fixture_bytes("ticket_created__mail.json")
    headers = zendesk_headers(body, secret=WRONG_SECRET)
    assert client.post("/hooks/zendesk", data=body, headers=headers).status_code == 401

    [refused] = [r for r in caplog.records if r.getMessage().startswith("refused ")]
    assert refused.getMessage().startswith(
        "refused a zendesk delivery from 127.0.0.1: signature does not match; "
    )
    assert refused.levelno == logging.WARNING
    assert (refused.integration, refused.reason, refused.client) == (  # type: ignore[attr-defined]
        "zendesk", "signature", "127.0.0.1",
    )  # fmt: skip
    assert not records(caplog, "accepted")
    assert "Charged twice" not in caplog.text and "4111" not in caplog.text
    assert headers["X-Zendesk-Webhook-Signature"] not in caplog.text


def test_a_note_written_logs_its_write_ticket_and_customer(
    hooks: Hooks, worker: Worker, core, caplog, fake_zendesk
):
    """A note written logs the write id, integration, ticket and customer, and its latency."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    caplog.set_level(logging.INFO)
    hooks.zendesk(fixture_bytes(SECOND_TICKET))
    worker.drain()

    assert len(fake_zendesk.notes(5149)) == 1
    [processed] = records(caplog, "done")
    assert processed.getMessage().endswith(" ms: done, 1 note queued")
    [line] = [r for r in caplog.records if hasattr(r, "write_id")]
    assert line.getMessage().startswith(
        "note out:1 written to zendesk 5149 for customer 1, "
    )  # fmt: skip
    assert line.getMessage().endswith(" s after its webhook")
    fields = {k: getattr(line, k) for k in ("write_id", "integration", "target_ref", "customer_id")}
    assert fields == {"write_id": 1, "integration": "zendesk", "target_ref": "5149",
                      "customer_id": 1}  # fmt: skip
    assert line.latency_s >= 0  # type: ignore[attr-defined]
    assert "Carryover ref" not in caplog.text  # nothing of the note's body


def test_json_lines_parse_and_carry_the_fields(
    hooks: Hooks, worker: Worker, capsys, restored_logging, fake_zendesk
):
    """In JSON each line is one object: UTC time, level, logger, message and the ids."""
    configure_logging({"level": "INFO", "format": "json"})
    capsys.readouterr()
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    accepted = next(line for line in lines if line.get("outcome") == "accepted")
    assert accepted["level"] == "INFO"
    assert accepted["logger"] == "middleware.ingest.hooks"
    assert accepted["message"].startswith("accepted zendesk delivery in:1: ")
    assert accepted["time"].endswith("Z") and accepted["time"][10] == "T"
    assert (accepted["integration"], accepted["delivery_id"]) == ("zendesk", 1)
    assert accepted["records"] == ["zendesk:ticket:5141"]
    processed = next(line for line in lines if line.get("outcome") == "done")
    assert processed["delivery_id"] == 1 and isinstance(processed["duration_ms"], float)


def test_json_lines_carry_a_traceback_as_a_field(capsys, restored_logging):
    """An error logged with its traceback stays one JSON line, the traceback a field of it."""
    configure_logging({"level": "INFO", "format": "json"})
    try:
        raise ValueError("broken")
    except ValueError:
        logging.getLogger("tests.logs").exception("it failed")
    [line] = [json.loads(text) for text in capsys.readouterr().err.splitlines()]
    assert line["message"] == "it failed" and line["level"] == "ERROR"
    assert "ValueError: broken" in line["traceback"]


def test_the_level_is_respected(capsys, restored_logging):
    """At WARNING, INFO lines are left out and warnings written, as text by default."""
    configure_logging({"level": "WARNING", "format": "text"})
    logger = logging.getLogger("tests.logs")
    logger.info("an accepted delivery")
    logger.warning("a refused delivery")
    err = capsys.readouterr().err
    assert "an accepted delivery" not in err
    assert " WARNING tests.logs: a refused delivery" in err


def test_configuring_again_replaces_its_own_handler_only(restored_logging):
    """A second configuration (once the file is read) leaves one handler of ours, and others."""
    root = logging.getLogger()
    others = [h for h in root.handlers if not isinstance(h, StderrHandler)]
    configure_logging({"level": "INFO", "format": "text"})
    configure_logging({"level": "DEBUG", "format": "json"})
    assert len([h for h in root.handlers if isinstance(h, StderrHandler)]) == 1
    assert [h for h in root.handlers if not isinstance(h, StderrHandler)] == others
    assert root.level == logging.DEBUG


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ({"level": "LOUD"}, "logging.level: 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR"),
        ({"format": "xml"}, "logging.format: 'xml' is not one of text, json"),
        ({"colour": True}, "logging.colour: unknown key"),
    ],
)
def test_bad_logging_settings_are_refused(section, error):
    """An unknown level or format stops the start with a message naming the key."""
    with pytest.raises(ConfigError, match=f"^{error}"):
        parse_config({"logging": section}, {})


def test_the_level_is_read_in_any_case():
    """level: warning reads as WARNING; the defaults are INFO and text."""
    assert parse_config({"logging": {"level": "warning"}}, {}).logging["level"] == "WARNING"
    assert parse_config({}, {}).logging == {"level": "INFO", "format": "text"}


def test_a_delivery_that_must_wait_logs_a_retry_with_the_error(
    hooks: Hooks, worker: Worker, caplog
):
    """A delivery whose upstream cannot be reached logs "retried later" with why, as a warning."""
    caplog.set_level(logging.INFO)
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))  # Zendesk is unreachable here
    worker.drain()
    [retry] = records(caplog, "retry")
    assert retry.levelno == logging.WARNING
    assert retry.getMessage().startswith("processed zendesk delivery in:1 in ")
    assert " ms: retried later: Zendesk unreachable: " in retry.getMessage()
    assert retry.error.startswith("Zendesk unreachable: ")  # type: ignore[attr-defined]
