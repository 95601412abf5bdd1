"""The audit log: every change an admin makes, with who, when, what and to what.

Handlers call record() once, after the change (or inside its transaction when they have one).
Details name what changed, never a secret or a password: a settings change names the fields,
not their values. Customers are kept by number; the page shows the name a customer has now,
so an erased customer's name does not live on here.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select

from middleware.config import Setting
from middleware.store.tables import audit_log, customers, utcnow

# What each action is called on the page, in the order of its filter.
ACTIONS = {
    "integration.connect": "Integration connected",
    "integration.disconnect": "Integration disconnected",
    "integration.new_secret": "New webhook secret",
    "integration.test": "Connection tested",
    "mapping.save": "Mapping saved",
    "mapping.restore": "Mapping version restored",
    "template.save": "Template saved",
    "template.restore": "Template restored",
    "customer.merge": "Customers merged",
    "customer.split": "Identity split off",
    "customer.erase": "Customer erased",
    "customer.channels": "Preferred channels set",
    "delivery.replay": "Replayed",
    "delivery.replay_dead": "Dead letters replayed",
    "history.start": "History import started",
    "history.stop": "History import stopped",
    "admin.create": "Admin created",
    "admin.disable": "Admin disabled",
    "admin.enable": "Admin enabled",
    "admin.unlock": "Admin unlocked",
    "admin.password": "Password reset",
    "admin.remove": "Admin removed",
}
# A handler's open transaction, which an entry joins (the pages import no SQLAlchemy).
Transaction = Connection
DETAIL_CHARS = 500  # a detail is a line, not a document (an upstream's error may be long)


@dataclass(frozen=True)
class AuditEntry:
    """One admin change as the audit page shows it."""

    at: datetime
    actor: str
    action: str
    target: str
    detail: str

    @property
    def label(self) -> str:
        """Return what the action is called on the page."""
        return ACTIONS.get(self.action, self.action)


def record(
    conn_or_engine: Connection | Engine,
    actor: str,
    action: str,
    target: str,
    detail: str = "",
    customer: int | None = None,
) -> None:
    """Add an admin change to the audit log (in the connection's transaction, if given one)."""
    assert action in ACTIONS, f"unknown audit action {action!r}"
    if len(detail) > DETAIL_CHARS:
        detail = detail[: DETAIL_CHARS - 1] + "…"
    row = {"at": utcnow(), "actor": actor[:255], "action": action, "target": target[:255],
           "detail": detail, "customer_id": customer}  # fmt: skip
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.begin() as conn:
            conn.execute(insert(audit_log).values(**row))
    else:
        conn_or_engine.execute(insert(audit_log).values(**row))


def cli_actor() -> str:
    """Return who acts from the command line: "cli", and the operating system's user."""
    try:
        return f"cli ({getpass.getuser()})"
    except (OSError, KeyError):  # no user name in the environment nor the password database
        return "cli"


def changed_settings(
    before: Mapping[str, Any] | None, after: Mapping[str, Any], schema: Mapping[str, Setting]
) -> str:
    """Name the settings that changed, secrets marked as such (names only, never a value)."""

    def value(settings: Mapping[str, Any], name: str) -> Any:
        found = settings.get(name)
        return schema[name].default if found is None and name in schema else found

    names = [n for n in after if value(before or {}, n) != value(after, n)]
    if before is None:  # the first save: the settings given beyond their defaults
        return "connected with " + _names(names, schema)
    return "changed " + _names(names, schema) if names else "saved, nothing changed"


def _names(names: list[str], schema: Mapping[str, Setting]) -> str:
    secret = {n for n in names if n in schema and schema[n].secret}
    return ", ".join(f"{n} (secret)" if n in secret else n for n in names) or "no settings"


def entries(
    conn: Connection,
    actor: str = "",
    action: str = "",
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[AuditEntry], int]:
    """Return a page of the log, newest first, and how many entries match in all."""
    where = []
    if actor:
        where.append(audit_log.c.actor == actor)
    if action:
        where.append(audit_log.c.action == action)
    total = conn.execute(select(func.count()).select_from(audit_log).where(*where)).scalar()
    query = (
        select(audit_log, customers.c.name)
        .join_from(audit_log, customers, customers.c.id == audit_log.c.customer_id, isouter=True)
        .where(*where).order_by(audit_log.c.id.desc()).offset(offset).limit(limit)
    )  # fmt: skip
    return [_entry(row) for row in conn.execute(query)], int(total or 0)


def _entry(row: Any) -> AuditEntry:
    target = row.target
    if row.customer_id is not None and row.name:  # the name it has now; none once erased
        target = f"{target} ({row.name})"
    return AuditEntry(row.at, row.actor, row.action, target, row.detail)


def actors(conn: Connection) -> list[str]:
    """Return everyone who appears in the log, by name."""
    query = select(audit_log.c.actor).distinct().order_by(audit_log.c.actor)
    return list(conn.execute(query).scalars())
