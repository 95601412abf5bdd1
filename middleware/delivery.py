"""The outbox: notes to write upstream, each at most once per ticket, within rate budgets.

A write is committed as a row before it is attempted, and carries a marker in its body.
A write that may have reached the upstream (the process died or the call timed out) is
checked upstream for its marker before it is tried again, so a ticket never gets it twice.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, Row, func, select

from middleware.queue import PENDING, LeasedQueue
from middleware.store import dialect_insert, utcnow, writes

ATTEMPTING = "attempting"
MARKER_LINE = "[Carryover ref {marker}]"
SHORTENED = "\n[… shortened to fit the upstream's size limit]"
MARKER_PATTERN = re.compile(r"\[Carryover ref (co-\d+-[a-z_]+)\]")


def marker_for(interaction_id: int, purpose: str) -> str:
    """Return the marker of one interaction's write of one purpose."""
    return f"co-{interaction_id}-{purpose}"


def with_marker(body: str, marker: str) -> str:
    """Append the marker line that recognises the note when it comes back."""
    return f"{body.rstrip()}\n\n{MARKER_LINE.format(marker=marker)}"


def fit_note(body: str, marker: str, max_bytes: int | None = None) -> str:
    """Return the body with its marker, cut at a line or word to fit max_bytes of UTF-8.

    The marker always survives the cut: it is how a note that comes back is recognised.
    """
    full = with_marker(body, marker)
    if max_bytes is None or len(full.encode("utf-8")) <= max_bytes:
        return full
    tail = f"{SHORTENED}\n\n{MARKER_LINE.format(marker=marker)}"
    room = max_bytes - len(tail.encode("utf-8"))
    if room <= 0:
        raise ValueError(f"a note cannot fit in {max_bytes} bytes with its marker")
    return clean_cut(body.rstrip(), room) + tail


def clean_cut(text: str, max_bytes: int) -> str:
    """Cut text to at most max_bytes of UTF-8 at a line break or space, never in a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    cut = encoded[:max_bytes].decode("utf-8", errors="ignore")
    for boundary in ("\n", " "):
        at = cut.rfind(boundary)
        if at >= len(cut) // 2:  # a boundary that keeps at least half of what fits
            return cut[:at].rstrip()
    return cut


def carries_marker(text: object) -> bool:
    """Tell whether a text is one of Carryover's own notes."""
    return isinstance(text, str) and MARKER_PATTERN.search(text) is not None


class Outbox(LeasedQueue):
    """Pending writes to upstream tools."""

    def __init__(self, engine: Engine) -> None:
        # A replayed write may have reached the upstream before: check for it first.
        super().__init__(engine, writes, ready=(PENDING, ATTEMPTING), replay_as=ATTEMPTING)

    @staticmethod
    def enqueue(
        conn: Connection,
        target: str,
        target_ref: str,
        interaction_id: int,
        purpose: str,
        body: str,
        max_bytes: int | None = None,
    ) -> bool:
        """Queue a note inside the caller's transaction; False if it was queued before."""
        marker = marker_for(interaction_id, purpose)
        now = utcnow()
        values = {
            "target": target, "target_ref": target_ref, "interaction_id": interaction_id,
            "purpose": purpose, "marker": marker, "body": fit_note(body, marker, max_bytes),
            "status": PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now,
        }  # fmt: skip
        statement = (
            dialect_insert(conn, writes)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(writes.c.id)
        )
        return conn.execute(statement).first() is not None

    def recent_count(self, target: str, seconds: float = 60.0) -> tuple[int, datetime | None]:
        """Count writes to a target done (or begun) in the last window; return the oldest too."""
        since = utcnow() - timedelta(seconds=seconds)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(func.count(), func.min(writes.c.done_at)).where(
                    writes.c.target == target, writes.c.done_at >= since
                )
            ).one()
        return int(row[0]), row[1]

    def for_ticket(self, target: str, target_ref: str) -> list[Row]:
        """Return the writes queued for one ticket or case."""
        with self.engine.begin() as conn:
            return list(
                conn.execute(
                    select(writes)
                    .where(writes.c.target == target, writes.c.target_ref == target_ref)
                    .order_by(writes.c.id)
                )
            )

    def listing(self, status: str | None = None, limit: int = 50) -> list[Row]:
        """Return the newest writes, optionally of one status."""
        query = select(writes).order_by(writes.c.id.desc()).limit(limit)
        if status:
            query = query.where(writes.c.status == status)
        with self.engine.begin() as conn:
            return list(conn.execute(query))
