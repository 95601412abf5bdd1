"""`carryover export --customer N`: one customer's data as JSON, the counterpart of erasure."""

from __future__ import annotations

import json

import pytest
import yaml
from sqlalchemy import select

from middleware.cli import main
from middleware.customers.edits import erase_customer, merge_by_admin
from middleware.customers.identity import create_customer
from middleware.store.tables import identities, reading
from tests.actions import Hooks
from tests.payloads import fixture_bytes
from tests.values import ZENDESK_SECRET, ZENDESK_TOKEN

ANN_EMAIL = "ann.example@example.com"


@pytest.fixture
def config_file(tmp_path, database_url) -> str:
    """Write a configuration that points the command line at the test store, with secrets."""
    path = tmp_path / "config.yaml"
    raw = {"database_url": database_url, "secret_key": "the-secret-key-of-the-store"}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


@pytest.fixture
def ann(client, worker, core, fake_zendesk) -> int:
    """Let Ann write twice (the second ticket gets a note); return her customer id."""
    Hooks(client).zendesk(fixture_bytes("ticket_created__mail.json"))
    Hooks(client).zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()
    with reading(core.engine) as conn:
        return int(
            conn.execute(
                select(identities.c.customer_id).where(identities.c.value == ANN_EMAIL)
            ).scalar_one()
        )


def export(config_file: str, customer: int, capsys) -> tuple[int, dict | None, str]:
    """Run the export; return its status, the JSON it printed (or None) and what it said."""
    status = main(["export", "--customer", str(customer), "--config", config_file])
    out, err = capsys.readouterr()
    return status, json.loads(out) if out.strip() else None, err


def test_the_export_holds_the_profile_identities_timeline_notes_and_deliveries(
    ann, config_file, capsys
):
    """Every part of Ann is in the JSON: her words, the note, the webhooks that named her."""
    status, data, _ = export(config_file, ann, capsys)
    assert status == 0 and data is not None
    assert sorted(data) == ["customer", "deliveries", "exported_at", "format", "identities",
                            "kept_apart_from", "merges", "notes", "timeline"]  # fmt: skip
    assert data["format"] == 1 and data["exported_at"].endswith("Z")
    assert data["customer"]["id"] == ann and data["customer"]["name"] == "Ann Example"
    assert data["customer"]["preferred_channels"] == [] and data["customer"]["merged_from"] == []
    assert {"type": "email", "value": ANN_EMAIL} in [
        {"type": i["type"], "value": i["value"]} for i in data["identities"]
    ]
    assert [t["channel"] for t in data["timeline"]] == ["email", "facebook"]
    assert all(t["text"] and t["source"] == "zendesk" for t in data["timeline"])
    assert all(t["occurred_at"].endswith("Z") for t in data["timeline"])
    (note,) = data["notes"]
    assert note["timeline_item"] == data["timeline"][1]["id"] and note["text"]
    assert note["written_to"] == "zendesk" and note["status"] == "done"
    assert [sorted(d) for d in data["deliveries"]] == [
        ["id", "integration", "received_at", "status"]
    ] * 2  # listed, never with their bodies


def test_the_export_holds_no_secret_and_no_raw_webhook_body(ann, config_file, capsys):
    """Neither the configuration's secrets nor the deliveries' bodies or headers are printed."""
    status = main(["export", "--customer", str(ann), "--config", config_file])
    out = capsys.readouterr().out
    assert status == 0
    for secret in ("the-secret-key-of-the-store", ZENDESK_SECRET, ZENDESK_TOKEN):
        assert secret not in out
    assert "x-zendesk-webhook-signature" not in out.lower() and '"body"' not in out


def test_export_then_erase_covers_the_same_rows_and_leaves_nothing_to_export(
    ann, core, config_file, capsys
):
    """What erasure deletes is what the export listed; afterwards the id is unknown (exit 1)."""
    _, data, _ = export(config_file, ann, capsys)
    assert data is not None
    with core.engine.begin() as conn:
        erased = erase_customer(conn, ann)
    assert erased == {
        "notes": len(data["notes"]), "deliveries": len(data["deliveries"]),
        "interactions": len(data["timeline"]), "identities": len(data["identities"]),
        "customers": 1 + len(data["customer"]["merged_from"]),
        "cached lookups": 1,  # her Zendesk user, not exported: a copy of what Zendesk holds
    }  # fmt: skip
    status, again, err = export(config_file, ann, capsys)
    assert (status, again) == (1, None)
    assert f"there is no customer {ann}" in err


@pytest.mark.parametrize("customer", [999999, 0, -3, 2**63])
def test_an_unknown_customer_exits_1_with_a_message(core, config_file, capsys, customer):
    """An id of no customer (or of none there can be) prints no JSON and says so."""
    status, data, err = export(config_file, customer, capsys)
    assert (status, data) == (1, None)
    assert err.strip() == (f"carryover: --customer: there is no customer {customer} (find one "
                           "on the admin's Customers page)")  # fmt: skip


def test_a_merged_customer_is_exported_as_the_one_it_became(ann, core, config_file, capsys):
    """The id of a customer merged into Ann exports Ann, with the merge, and says so."""
    with core.engine.begin() as conn:
        other = create_customer(conn, "Ann (old record)")
        merge_by_admin(conn, other, ann, "ada")
    status, data, err = export(config_file, other, capsys)
    assert status == 0 and data is not None
    assert f"customer {other} was merged into {ann}: exporting {ann}" in err
    assert data["customer"]["id"] == ann and data["customer"]["merged_from"] == [other]
    assert [(m["from"], m["into"], m["by"]) for m in data["merges"]] == [(other, ann, "admin:ada")]
