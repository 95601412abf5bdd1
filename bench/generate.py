"""Build the phone benchmark's store: 100,000 customers and 1,000,000 interactions in SQLite.

The schema is the real one (`make_engine` + `upgrade`); the rows go in through raw
`sqlite3.executemany` in large batches, which takes well under a minute where the
pipeline would take hours. Customer 1, the heavy customer, has 5,000 interactions; the
others have 1 to 19 each. Every customer has an email, a phone and a Zendesk user id.

The file is cached under var/, named after GENERATOR_VERSION and the migration head, and
reused by later runs; each run works on a copy, so the cached file stays as generated.

    python -m bench.generate --out PATH      # write a store to PATH
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import phonenumbers
from alembic.script import ScriptDirectory

from bench.environment import ROOT
from bench.report import progress
from middleware.store.tables import MIGRATIONS_DIR, make_engine, upgrade

GENERATOR_VERSION = 1  # raise whenever the rows generated change, so the cache is rebuilt
CUSTOMERS = 100_000
INTERACTIONS = 1_000_000
HEAVY_CUSTOMER = 1
HEAVY_INTERACTIONS = 5_000
PER_CUSTOMER = (1, 19)  # the others: uniform in this range, then adjusted to the total
SEED = 20_240_611
SPAN = timedelta(days=730)  # interactions spread over the last two years
NEWEST_AGO = timedelta(hours=3)  # older than the pop's live-call window (2 h)
BATCH = 100_000
CAUSED_BY = "bench:generate"
CACHE_PREFIX = "bench-phone-1m"
PHONE_PREFIX = "+1212"  # New York; 2000001 to 2100000 after it are valid US numbers
ZENDESK_USER_BASE = 360_000_000_000
TICKET_BASE = 100_000
# SQLAlchemy's DateTime on SQLite: text that sorts as time, microseconds always present.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

FIRST_NAMES = (
    "Ann", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas",
    "Kate", "Liam", "Maria", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sam", "Tara",
)  # fmt: skip
LAST_NAMES = (
    "Adams", "Brown", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ivanova",
    "Jones", "Kim", "Lopez", "Müller", "Nguyen", "Okafor", "Patel", "Rossi", "Smith",
)  # fmt: skip
AGENTS = ("Dana Reyes", "Eli Park", "Fatima Khan", "Gus Moreau", "Hanna Berg", "Ivo Petrov")
TEAMS = ("Billing", "Support", "Shipping", "Accounts")
TICKET_SUBJECTS = (
    "Charged twice for my invoice", "Cannot log in after the password reset",
    "Where is my order?", "Refund not received yet", "Change the delivery address",
    "The app crashes on start", "Cancel my subscription", "Wrong item in the parcel",
    "Invoice address is wrong", "Question about the annual plan",
)  # fmt: skip
CUSTOMER_TEXTS = (
    "Hi, I was charged twice this month, please refund one of the payments.",
    "I reset my password but the login page still says it is wrong.",
    "My order was due on Monday and the tracking has not moved since.",
    "Thanks, that fixed it. Great service!",
    "This is the third time I am writing about this, still no answer.",
    "Could you send the invoice again? I cannot find it.",
    "The parcel arrived damaged, the box was open.",
    "Please call me back this afternoon, I am at work until 3.",
    "I would like to upgrade to the annual plan.",
    "Still waiting for the refund you promised last week.",
)  # fmt: skip
AGENT_TEXTS = (
    "Thanks for reaching out, I have forwarded this to our billing team.",
    "I have issued the refund; it takes 3 to 5 working days.",
    "Could you send us a photo of the parcel?",
)  # fmt: skip
# Zendesk channels, weighted roughly as a support desk sees them.
ZENDESK_CHANNELS = ("email",) * 5 + ("web",) * 3 + ("chat", "chat", "facebook", "messaging")
TICKET_STATUSES_RECENT = ("new", "open", "open", "pending", "solved", "solved", "closed")
TICKET_STATUSES_OLD = ("closed",) * 12 + ("solved",) * 6 + ("pending", "open")
RECENT = timedelta(days=30)

COLUMNS = (
    "customer_id", "source", "external_id", "kind", "channel", "direction", "occurred_at",
    "updated_at", "status", "subject", "text", "customer_name", "agent", "team", "link",
    "duration_s", "identities", "candidates",
)  # fmt: skip
INSERT_INTERACTION = (
    f"INSERT INTO interactions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
)
INSERT_CUSTOMER = "INSERT INTO customers (id, name, created_at) VALUES (?, ?, ?)"
INSERT_IDENTITY = (
    "INSERT INTO identities (customer_id, type, value, shared, caused_by, created_at) "
    "VALUES (?, ?, ?, 0, ?, ?)"
)


@dataclass(frozen=True)
class Generated:
    """What a generation wrote and how long it took."""

    path: Path
    customers: int
    interactions: int
    seconds: float


def phone_of(customer_id: int) -> str:
    """Return the customer's phone number in E.164 (distinct for every customer)."""
    return f"{PHONE_PREFIX}{2_000_000 + customer_id:07d}"


def email_of(customer_id: int, name: str) -> str:
    """Return the customer's email address, lower-case."""
    first, last = name.lower().replace("ü", "ue").split(" ")
    return f"{first}.{last}.{customer_id}@example.com"


def name_of(customer_id: int) -> str:
    """Return the customer's name (a fixed function of the id)."""
    first = FIRST_NAMES[customer_id % len(FIRST_NAMES)]
    last = LAST_NAMES[(customer_id // len(FIRST_NAMES)) % len(LAST_NAMES)]
    return f"{first} {last}"


def migration_head() -> str:
    """Return the newest migration's revision (the cache is only good for that schema)."""
    return "-".join(sorted(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()))


def cached_path() -> Path:
    """Return where the cached store of this generator version and schema lives."""
    return ROOT / "var" / f"{CACHE_PREFIX}-v{GENERATOR_VERSION}-{migration_head()}.db"


def check_phones(sample_every: int = 997) -> None:
    """Fail unless a sample of the generated numbers (and the last one) are valid numbers."""
    for customer_id in [*range(1, CUSTOMERS + 1, sample_every), CUSTOMERS]:
        number = phonenumbers.parse(phone_of(customer_id))
        if not phonenumbers.is_valid_number(number):
            raise ValueError(f"generated phone {phone_of(customer_id)} is not a valid number")


def interaction_counts(rng: random.Random) -> list[int]:
    """Return each customer's number of interactions (index 0 is customer 1)."""
    counts = [rng.randint(*PER_CUSTOMER) for _ in range(CUSTOMERS - 1)]
    excess = sum(counts) + HEAVY_INTERACTIONS - INTERACTIONS
    low, high = PER_CUSTOMER
    while excess:
        index = rng.randrange(len(counts))
        if excess > 0 and counts[index] > low:
            counts[index] -= 1
            excess -= 1
        elif excess < 0 and counts[index] < high:
            counts[index] += 1
            excess += 1
    return [HEAVY_INTERACTIONS, *counts]


class RowMaker:
    """Make one customer's interactions as rows; the first field is the time, for sorting."""

    def __init__(self, rng: random.Random, newest: float) -> None:
        self.rng = rng
        self.newest = newest
        self.oldest = newest - SPAN.total_seconds()
        self.next_ticket = TICKET_BASE
        self.next_comment = 1

    def customer_rows(self, customer_id: int, count: int) -> list[tuple[Any, ...]]:
        """Return `count` interactions of one customer, oldest first."""
        rng = self.rng
        name = name_of(customer_id)
        phone = phone_of(customer_id)
        by_email = (
            f'[["email","{email_of(customer_id, name)}"],'
            f'["zendesk_user","{ZENDESK_USER_BASE + customer_id}"]]'
        )
        by_phone = f'[["phone","{phone}"]]'
        times = sorted(rng.uniform(self.oldest, self.newest) for _ in range(count))
        tickets: list[tuple[int, str]] = []  # (ticket id, channel) for later comments
        rows = []
        for at in times:
            draw = rng.random()
            if draw < 0.35 or (draw < 0.5 and not tickets):
                rows.append(self._ticket(customer_id, at, name, by_email, tickets))
            elif draw < 0.5:
                rows.append(self._comment(customer_id, at, name, by_email, tickets))
            elif draw < 0.65:
                rows.append(self._sms(customer_id, at, name, by_phone))
            else:
                source = "twilio" if draw < 0.8 else "cti"
                rows.append(self._call(customer_id, at, name, by_phone, source))
        return rows

    def _ticket(
        self, cid: int, at: float, name: str, ids: str, tickets: list[tuple[int, str]]
    ) -> tuple[Any, ...]:
        rng = self.rng
        self.next_ticket += 1
        ticket = self.next_ticket
        channel = rng.choice(ZENDESK_CHANNELS)
        tickets.append((ticket, channel))
        recent = at > self.newest - RECENT.total_seconds()
        status = rng.choice(TICKET_STATUSES_RECENT if recent else TICKET_STATUSES_OLD)
        updated = min(at + rng.uniform(60, 4 * 86400), self.newest)
        agent = rng.choice(AGENTS) if status != "new" else None
        team = rng.choice(TEAMS) if agent else None
        link = f"https://example.zendesk.com/agent/tickets/{ticket}"
        return (at, updated, cid, "zendesk", str(ticket), "ticket", channel, "inbound", status,
                rng.choice(TICKET_SUBJECTS), rng.choice(CUSTOMER_TEXTS), name, agent, team,
                link, None, ids)  # fmt: skip

    def _comment(
        self, cid: int, at: float, name: str, ids: str, tickets: list[tuple[int, str]]
    ) -> tuple[Any, ...]:
        rng = self.rng
        ticket, channel = rng.choice(tickets[-3:])
        self.next_comment += 1
        inbound = rng.random() < 0.8
        text = rng.choice(CUSTOMER_TEXTS if inbound else AGENT_TEXTS)
        return (at, at, cid, "zendesk", f"{ticket}#{self.next_comment}", "message", channel,
                "inbound" if inbound else "outbound", None, None, text, name, None, None,
                None, None, ids)  # fmt: skip

    def _sms(self, cid: int, at: float, name: str, ids: str) -> tuple[Any, ...]:
        sid = f"SM{self.rng.getrandbits(128):032x}"
        return (at, at, cid, "twilio", sid, "message", "sms", "inbound", "received", None,
                self.rng.choice(CUSTOMER_TEXTS), None, None, None, None, None, ids)  # fmt: skip

    def _call(self, cid: int, at: float, name: str, ids: str, source: str) -> tuple[Any, ...]:
        rng = self.rng
        inbound = rng.random() < 0.9
        if source == "twilio":
            call_id = f"CA{rng.getrandbits(128):032x}"
        else:
            bits = f"{rng.getrandbits(128):032x}"
            call_id = f"{bits[:8]}-{bits[8:12]}-{bits[12:16]}-{bits[16:20]}-{bits[20:]}"
        duration = rng.randint(20, 1500)
        updated = min(at + duration, self.newest)
        return (at, updated, cid, source, call_id, "call", "phone",
                "inbound" if inbound else "outbound", "completed", None, None, None,
                rng.choice(AGENTS), rng.choice(TEAMS), None, duration, ids)  # fmt: skip


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime(TIME_FORMAT)


def interaction_rows(rng: random.Random, newest: float) -> list[tuple[Any, ...]]:
    """Return every interaction row, oldest first (so ids grow with time, as in production)."""
    maker = RowMaker(rng, newest)
    made: list[tuple[Any, ...]] = []
    for index, count in enumerate(interaction_counts(rng)):
        made.extend(maker.customer_rows(index + 1, count))
    made.sort(key=lambda row: row[0])
    return made


def _as_columns(rows: Sequence[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """Turn generated rows (times as epoch seconds) into INSERT parameters in COLUMNS order."""
    for at, updated, *rest in rows:
        cid, source, external_id, kind, channel, direction = rest[:6]
        yield (cid, source, external_id, kind, channel, direction, _stamp(at),
               _stamp(updated), *rest[6:], None)  # fmt: skip


def _batches(rows: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _insert(db: sqlite3.Connection, sql: str, rows: Sequence[Any]) -> None:
    for batch in _batches(rows):
        db.execute("BEGIN")
        db.executemany(sql, batch)
        db.execute("COMMIT")


def generate(path: Path, seed: int = SEED) -> Generated:
    """Write a fresh store with the real schema and the benchmark's rows to `path`."""
    began = time.monotonic()
    check_phones()
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    rng = random.Random(seed)
    newest = (datetime.now(UTC) - NEWEST_AGO).timestamp()
    created = _stamp(newest - SPAN.total_seconds() - 86400)
    customer_rows, identity_rows = [], []
    for cid in range(1, CUSTOMERS + 1):
        name = name_of(cid)
        customer_rows.append((cid, name, created))
        identity_rows += [
            (cid, "email", email_of(cid, name), CAUSED_BY, created),
            (cid, "phone", phone_of(cid), CAUSED_BY, created),
            (cid, "zendesk_user", str(ZENDESK_USER_BASE + cid), CAUSED_BY, created),
        ]
    rows = list(_as_columns(interaction_rows(rng, newest)))
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        # Fast and unsafe, for generation only; the server opens it with its own settings.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-1000000")  # 1 GB: the indexes stay in memory
        _insert(db, INSERT_CUSTOMER, customer_rows)
        _insert(db, INSERT_IDENTITY, identity_rows)
        _insert(db, INSERT_INTERACTION, rows)
        # Back to a single self-contained file, so it can be copied as it is.
        db.execute("PRAGMA journal_mode=DELETE")
    return Generated(path, CUSTOMERS, len(rows), time.monotonic() - began)


def cached_store() -> tuple[Path, Generated | None]:
    """Return the cached store, generating it first if missing; also what was generated."""
    path = cached_path()
    if path.exists():
        return path, None
    for pattern in (f"{CACHE_PREFIX}-*.db", f"{CACHE_PREFIX}-*.db.partial"):
        for stale in path.parent.glob(pattern):
            stale.unlink()  # an older generator version or schema, or an interrupted run
    progress(f"generating the store once (about 30 s), cached as {path.relative_to(ROOT)}")
    partial = path.with_name(path.name + ".partial")
    generated = generate(partial)
    partial.replace(path)  # only a complete store gets the cache's name
    progress(f"generated {generated.interactions:,} interactions in {generated.seconds:.1f} s")
    return path, Generated(path, generated.customers, generated.interactions, generated.seconds)


def copy_store(source: Path, directory: Path) -> Path:
    """Copy the store into a working directory, so the run does not change the cache."""
    target = directory / source.name
    shutil.copyfile(source, target)
    return target


def main(argv: list[str] | None = None) -> int:
    """Write a store to --out and say what was written (on stderr)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=cached_path(), help="default: the cache")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    done = generate(args.out, args.seed)
    progress(f"generated {done.customers:,} customers, {done.interactions:,} interactions "
             f"in {done.seconds:.1f} s: {done.path}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
