"""The relational store: tables, engine set-up for SQLite and PostgreSQL, and migrations."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.exc import DisconnectionError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
READ_ONLY = "carryover_read_only"

# SQLite wants INTEGER PRIMARY KEY for rowid aliasing; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")
MAX_ID = 2**63 - 1  # the largest id either store holds; a larger one is an error, not "none"

metadata = MetaData()

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("plugin", String(32), nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("headers", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("event_keys", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", DateTime),
    Column("last_error", Text),
    Column("trail", Text, nullable=False, default="[]"),
    Column("finished_at", DateTime),
    Column("failing_since", DateTime),  # first of the transient failures since it last worked
    Column("waiting_for", String(16)),  # what holds it back besides its backoff (see queue.py)
    Index("ix_deliveries_due", "status", "next_attempt_at"),
)

delivery_keys = Table(
    "delivery_keys",
    metadata,
    Column("plugin", String(32), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    # Deleting deliveries (the purge, an erasure) finds their keys by it.
    Index("ix_delivery_keys_delivery", "delivery_id"),
)

customers = Table(
    "customers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(255)),
    Column("created_at", DateTime, nullable=False),
    Column("merged_into", Id, ForeignKey("customers.id")),
    Column("preferred_channels", Text),
    # Where an explicit preference came from (survey or admin), when, and what caused it.
    Column("preferred_source", String(16)),
    Column("preferred_at", DateTime),
    Column("preferred_caused_by", String(255)),
    Index("ix_customers_merged_into", "merged_into"),  # who was merged into a customer
)

identities = Table(
    "identities",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("value", String(255), nullable=False),
    Column("shared", Boolean, nullable=False, default=False),
    Column("caused_by", String(255), nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("type", "value", "customer_id", name="uq_identities_holder"),
    Index("ix_identities_lookup", "type", "value"),
    Index("ix_identities_customer", "customer_id"),
)

merges = Table(
    "merges",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("from_customer", Id, ForeignKey("customers.id"), nullable=False),
    Column("into_customer", Id, ForeignKey("customers.id"), nullable=False),
    Column("caused_by", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", DateTime, nullable=False),
)

interactions = Table(
    "interactions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("customer_id", Id, ForeignKey("customers.id")),
    Column("source", String(32), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("direction", String(16)),
    Column("occurred_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("status", String(32)),
    Column("subject", Text),
    Column("text", Text),
    Column("customer_name", String(255)),
    Column("agent", String(255)),
    Column("team", String(255)),
    Column("link", Text),
    Column("duration_s", Integer),
    Column("identities", Text, nullable=False, default="[]"),
    Column("candidates", Text),
    Column("number", String(64)),  # the record's number as agents know it (CaseNumber, ticket id)
    Column("said_by", String(16)),  # who wrote `text`: customer, agent, or NULL (unknown)
    Column("recording", Text),  # where agents listen to a call's recording (an http(s) link)
    UniqueConstraint("source", "kind", "external_id", name="uq_interactions_record"),
    Index("ix_interactions_customer", "customer_id", "occurred_at"),
    Index("ix_interactions_updated", "updated_at"),  # the timeline's purge finds the oldest
    Index("ix_interactions_external_id", "external_id"),  # the deliveries search
    Index("ix_interactions_number", "number"),
)

writes = Table(
    "writes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("target", String(32), nullable=False),
    Column("target_ref", String(255), nullable=False),
    Column("interaction_id", Id, ForeignKey("interactions.id"), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("marker", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", DateTime),
    Column("last_error", Text),
    Column("created_at", DateTime, nullable=False),
    Column("done_at", DateTime),
    Column("attempted_at", DateTime),  # when the last write was sent (its outcome may be unknown)
    Column("failing_since", DateTime),
    Column("waiting_for", String(16)),
    UniqueConstraint("target", "target_ref", "marker", name="uq_writes_once"),
    Index("uq_writes_purpose", "target", "target_ref", "interaction_id", "purpose", unique=True),
    Index("ix_writes_due", "status", "next_attempt_at"),
    Index("ix_writes_done", "target", "done_at"),
    Index("ix_writes_interaction", "interaction_id"),  # a timeline item's notes, to delete
)

# Which deliveries spoke of which customer: erasing a customer erases these raw deliveries too.
delivery_customers = Table(
    "delivery_customers",
    metadata,
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True),
    Column("customer_id", Id, primary_key=True),
    Index("ix_delivery_customers_customer", "customer_id"),
)

# Which interactions each delivery recorded: a delivery is found by its ticket, case or call.
delivery_records = Table(
    "delivery_records",
    metadata,
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True),
    Column("interaction_id", Id, primary_key=True),
    Index("ix_delivery_records_interaction", "interaction_id"),
)

# Customers an admin split apart (customer_a < customer_b): no record joins them again.
separations = Table(
    "separations",
    metadata,
    Column("customer_a", Id, ForeignKey("customers.id"), primary_key=True),
    Column("customer_b", Id, ForeignKey("customers.id"), primary_key=True),
    Column("caused_by", String(255), nullable=False),
    Column("at", DateTime, nullable=False),
)

# Documents admins edit (kind "mapping" or "template"); the newest row of a name is in use.
document_versions = Table(
    "document_versions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(64), nullable=False),
    Column("document", Text, nullable=False),
    Column("note", String(255), nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Index("ix_document_versions_name", "kind", "name", "id"),
)

# The last API usage each upstream reported, for /readyz (written by whichever process called).
upstream_usage = Table(
    "upstream_usage",
    metadata,
    Column("target", String(32), primary_key=True),
    Column("used", Integer, nullable=False),
    Column("allowed", Integer, nullable=False),
    Column("seen_at", DateTime, nullable=False),
)

# Each upstream's health, shared by every process: how long it is paused (after a 429, or
# with backoff after a run of 5xx and timeouts) and its latest failure.
upstream_state = Table(
    "upstream_state",
    metadata,
    Column("target", String(32), primary_key=True),
    Column("blocked_until", DateTime),
    Column("failures", Integer, nullable=False, default=0),  # in a row, since the last success
    Column("reason", Text),  # why it is paused
    Column("last_error", Text),
    Column("last_error_at", DateTime),
    Column("last_ok_at", DateTime),
)

# One row per note write sent in the last minute, per upstream: the note budget's ledger.
write_slots = Table(
    "write_slots",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("target", String(32), nullable=False),
    Column("at", DateTime, nullable=False),
    Index("ix_write_slots_target", "target", "at"),
)

admins = Table(
    "admins",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("username", String(255), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("last_login_at", DateTime),
    Column("disabled_at", DateTime),  # set: the admin cannot log in (another admin may enable)
)

# Admin sessions, so that logout and a password change end them on the server. The cookie
# carries a random token and the store only its SHA-256: a copy of the database opens no session.
admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("admin_id", Id, ForeignKey("admins.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("seen_at", DateTime, nullable=False),
    Index("ix_admin_sessions_admin", "admin_id"),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("username", String(255), nullable=False),
    Column("remote_addr", String(64), nullable=False),
    Column("at", DateTime, nullable=False),
    Index("ix_login_failures_at", "at"),
)


# One import of past records from an upstream's API (`carryover backfill`): where it stands,
# so that a killed import continues where it stopped and the admin page shows its progress.
history_imports = Table(
    "history_imports",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("plugin", String(32), nullable=False),
    Column("since", DateTime, nullable=False),
    Column("status", String(16), nullable=False),  # running, done, stopped
    Column("cursor", Text),  # where the next page starts, as the upstream gave it
    Column("owner", String(255), nullable=False),  # host:pid of the process running it
    Column("started_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("imported", Integer, nullable=False, default=0),
    Column("unchanged", Integer, nullable=False, default=0),  # imported before, same version
    Column("skipped", Integer, nullable=False, default=0),
    Column("refused", Integer, nullable=False, default=0),
    Column("reasons", Text, nullable=False, default="{}"),  # {"refused: why": count, …}
    Column("progress", Float),  # 0 to 1: how far through the period the import has read
    Column("api_calls", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Index("ix_history_imports_plugin", "plugin", "id"),
)

# Each past record imported, by its key and version: a second import skips it.
history_keys = Table(
    "history_keys",
    metadata,
    Column("plugin", String(32), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("import_id", Id, nullable=False),
)

# Deliveries refused before they were stored (bad signature, wrong org, malformed body): a
# count per integration, reason and hour, kept for REFUSALS_KEPT_DAYS (see ingest/refusals.py).
refusal_counts = Table(
    "refusal_counts",
    metadata,
    Column("plugin", String(32), primary_key=True),
    Column("reason", String(32), primary_key=True),
    Column("hour", DateTime, primary_key=True),  # the hour (UTC) the refusals fell in
    Column("count", BigInteger, nullable=False),
    Column("last_at", DateTime, nullable=False),
)

# The last refusals of each integration (about 20 each): when, why and from which address.
# Never the body, a header, a token or a signature: these may be a sender's secrets.
refusals = Table(
    "refusals",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("plugin", String(32), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("address", String(64), nullable=False),
    Index("ix_refusals_plugin", "plugin", "id"),
)

# Each purge of old webhook bodies and timeline items (see customers/retention.py): when it
# ran and what it removed, for the overview; the newest few are kept.
purge_runs = Table(
    "purge_runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("finished_at", DateTime, nullable=False),
    Column("deliveries", Integer, nullable=False),
    Column("timeline_items", Integer, nullable=False),
    Column("notes", Integer, nullable=False),
    Column("customers", Integer, nullable=False),
)


# Admin changes, newest last: who (an admin's name, or "cli (os user)"), what, to what. Never a
# secret or a password; a customer is named by number (customer_id), and the page shows the
# name the customer has now, so an erasure leaves no name behind here.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", DateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(255), nullable=False),
    Column("detail", Text, nullable=False),
    Column("customer_id", Id),
    Index("ix_audit_log_actor", "actor", "id"),
    Index("ix_audit_log_action", "action", "id"),
)

# What plugins looked up upstream (a Zendesk user, a Salesforce contact), shared by every
# process so that a second worker does not ask again (see integrations/lookups.py). `kind` is
# the identity type the key is, so erasing a customer finds the rows by their identities.
# Personal data (names, emails, phones), never a credential; expired rows are purged.
lookup_cache = Table(
    "lookup_cache",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("plugin", String(32), primary_key=True),
    Column("value", Text, nullable=False),  # the looked-up value as JSON
    Column("fetched_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Index("ix_lookup_cache_expires", "expires_at"),
)


# Each worker alive (a `carryover worker` process, or the worker embedded in a web process),
# written by its heartbeat: an operator sees which are running, and since when. A worker that
# stops cleanly removes its row; one that died leaves it, silent, until a day has passed.
workers = Table(
    "workers",
    metadata,
    Column("name", String(255), primary_key=True),  # the worker's lease owner (host:pid:thread)
    Column("kind", String(16), nullable=False),  # worker (a process of its own) or embedded
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime, nullable=False),  # its first heartbeat
    Column("seen_at", DateTime, nullable=False),  # its latest heartbeat
    Column("alive_until", DateTime, nullable=False),  # seen_at + 3 leases: silent after that
)


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime (the store's convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


def inserted_id(result: CursorResult[Any]) -> int:
    """Return the primary key of the row an INSERT just made."""
    key = result.inserted_primary_key
    assert key is not None and key[0] is not None, "the INSERT made no row"
    return int(key[0])


def advisory_key(value: str) -> int:
    """Return a 32-bit signed key for a PostgreSQL advisory lock on a name (collisions only
    make two holders wait for each other)."""
    return int.from_bytes(hashlib.sha256(value.encode()).digest()[:4], "big", signed=True)


def dialect_insert(conn: Connection | Engine, table: Table) -> Any:
    """Return an INSERT of the store's dialect, which has on_conflict_do_nothing/do_update."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def insert_unless_there(conn: Connection, table: Table, *returning: Column[Any]) -> Any:
    """Return an INSERT … ON CONFLICT DO NOTHING of the table, built once per dialect, that
    returns the given columns of a row it inserts (none when it inserted nothing).

    Give the values as parameters of the execution: a statement built per row costs more
    than running it.
    """
    return _insert_unless_there(conn.dialect.name, table, returning)


@functools.cache
def _insert_unless_there(
    dialect_name: str, table: Table, returning: tuple[Column[Any], ...]
) -> Any:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(table).on_conflict_do_nothing()
    return statement.returning(*returning) if returning else statement


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)  # json.dumps builds one a call


def dumps(value: Any) -> str:
    """Serialise a value for a JSON text column."""
    return _ENCODER.encode(value)


def _prepare_sqlite(engine: Engine) -> None:
    # WAL lets readers run beside the writer; synchronous=FULL makes a committed delivery
    # survive a power loss (WAL's NORMAL only survives a process crash).
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    # BEGIN IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout
    # instead of failing when a read transaction tries to upgrade. Reads (see reading())
    # begin deferred: under WAL they never wait for, nor hold up, a writer.
    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def reading(engine: Engine) -> Connection:
    """Open a connection for reads only (use it as a context manager)."""
    return engine.connect().execution_options(**{READ_ONLY: True})


def _create_private(database: Path) -> None:
    """Create a new SQLite file readable by its owner only, as its key beside it is.

    It holds customers' words and identities; SQLite gives its -wal and -shm files the
    database's own permissions. An existing file keeps the permissions its admin gave it.
    """
    database.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def make_engine(database_url: str) -> Engine:
    """Create an engine for SQLite (durable, WAL) or PostgreSQL."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            _create_private(Path(url.database))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        _prepare_sqlite(engine)
        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20)
    _ping_after_idle(engine)
    return engine


PING_AFTER_IDLE_S = 5.0


def _ping_after_idle(engine: Engine) -> None:
    """Ask PostgreSQL whether a pooled connection still works before using it again, once it
    has waited in the pool PING_AFTER_IDLE_S or longer.

    pool_pre_ping would ask before every use: one more round trip in each transaction, which
    a busy worker makes a dozen times a second while its connections never wait long enough
    to go stale. A connection that fails in use anyway (PostgreSQL restarted meanwhile) makes
    the pool drop every connection older than the failure, so the next uses reconnect.
    """

    @event.listens_for(engine, "checkin")
    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool retries the checkout with a new connection.
            raise DisconnectionError(f"the pooled connection failed its ping: {exc}") from exc


def _alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    # Alembic keeps options in a ConfigParser, which reads "%" as interpolation: a venv or
    # site-packages path may hold one (e.g. /opt/100%/), so it is doubled.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Apply every pending migration."""
    command.upgrade(_alembic_config(engine), "head")


def store_revision(engine: Engine) -> str | None:
    """Return the newest migration the store has (None: a store with no tables yet)."""
    with engine.connect() as connection:
        heads = MigrationContext.configure(connection).get_current_heads()
    return max(heads) if heads else None


def migrated_by_newer_release(engine: Engine) -> bool:
    """Tell whether the store is at a migration this release does not know (a newer one's).

    Migrations only add, so while a rolling upgrade replaces processes one by one, those of
    the release before keep working on the upgraded store.
    """
    revision = store_revision(engine)
    if revision is None:
        return False
    try:
        ScriptDirectory.from_config(_alembic_config(engine)).get_revision(revision)
    except CommandError:  # "Can't locate revision": not one of ours
        return True
    return False


def migrations_applied(engine: Engine) -> bool:
    """Tell whether the store is at the newest migration."""
    heads = set(ScriptDirectory.from_config(_alembic_config(engine)).get_heads())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    return current == heads
