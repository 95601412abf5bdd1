"""The outbox: notes to write upstream, each at most once per ticket, within rate budgets.

A write is committed as a row before it is attempted, and carries a marker in its body.
A write that may have reached the upstream (the process died, the call timed out, the
connection dropped) is checked upstream for its marker before it is tried again, so a
ticket never gets it twice. The check waits a grace period after the attempt: an upstream
can apply a request after its client gave up waiting, and a marker not there yet is not a
"no" (see Worker._write).

The marker also recognises Carryover's own notes when they come back as webhooks. A
customer can write "[Carryover ref co-1-summary]" too, so a marker carries a MAC keyed with
the installation's secret, and a comment counts as Carryover's own only when its MAC checks
or when the outbox holds that very marker for that very ticket (the markers written before
they were keyed, and those of processes that had no shared secret).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from contextvars import ContextVar

from sqlalchemy import Connection, Engine, Row, select

from middleware.store.queue import PENDING, LeasedQueue
from middleware.store.tables import insert_unless_there, utcnow, writes

ATTEMPTING = "attempting"
# The ids of the notes queued while the worker processes one delivery (see Worker._process):
# each is timed from that delivery's arrival to being written (/metrics). Unset elsewhere.
queued_notes: ContextVar[list[int] | None] = ContextVar("queued_notes", default=None)
MARKER_LINE = "[Carryover ref {marker}]"
SHORTENED = "\n[… shortened to fit the upstream's size limit]"
MARKER_PATTERN = re.compile(r"\[Carryover ref (co-\d{1,19}-[a-z_]{1,32}(?:-[0-9a-f]{12})?)\]")
MAC_CHARS = 12  # 48 bits: each guess costs a forger a comment on a ticket


class NoteMarkers:
    """Make keyed markers, and recognise Carryover's own notes by them."""

    def __init__(self, secret: str, engine: Engine) -> None:
        self.key = hmac.new(secret.encode(), b"carryover note markers", hashlib.sha256).digest()
        self.engine = engine

    def marker_for(self, interaction_id: int, purpose: str) -> str:
        """Return the marker of one interaction's write of one purpose, with its MAC."""
        plain = f"co-{interaction_id}-{purpose}"
        return f"{plain}-{self._mac(plain)}"

    def _mac(self, plain: str) -> str:
        return hmac.new(self.key, plain.encode(), hashlib.sha256).hexdigest()[:MAC_CHARS]

    def is_own_note(self, target: str, thread_ref: str | None, text: object) -> bool:
        """Tell whether a comment's text is one of Carryover's notes on that ticket or case."""
        if not isinstance(text, str) or "[Carryover ref " not in text:
            return False
        for match in MARKER_PATTERN.finditer(text):
            marker = match.group(1)
            plain, _, mac = marker.rpartition("-")
            if len(mac) == MAC_CHARS and hmac.compare_digest(mac, self._mac(plain)):
                return True
            if thread_ref and self._written(target, thread_ref, marker):
                return True
        return False

    def _written(self, target: str, thread_ref: str, marker: str) -> bool:
        with self.engine.connect() as conn:
            found = conn.execute(
                select(writes.c.id).where(
                    writes.c.target == target,
                    writes.c.target_ref == thread_ref,
                    writes.c.marker == marker,
                )
            )
            return found.first() is not None


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


class Outbox(LeasedQueue):
    """Pending writes to upstream tools."""

    def __init__(self, engine: Engine) -> None:
        # A replayed write may have reached the upstream before: check for it first.
        super().__init__(
            engine, writes, "target", ready=(PENDING, ATTEMPTING), replay_as=ATTEMPTING
        )

    @staticmethod
    def enqueue(
        conn: Connection,
        markers: NoteMarkers,
        target: str,
        target_ref: str,
        interaction_id: int,
        purpose: str,
        body: str,
        max_bytes: int | None = None,
    ) -> bool:
        """Queue a note inside the caller's transaction; False if it was queued before."""
        marker = markers.marker_for(interaction_id, purpose)
        now = utcnow()
        values = {
            "target": target, "target_ref": target_ref, "interaction_id": interaction_id,
            "purpose": purpose, "marker": marker, "body": fit_note(body, marker, max_bytes),
            "status": PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now,
        }  # fmt: skip
        queued = conn.execute(insert_unless_there(conn, writes, writes.c.id), values).first()
        if queued is None:
            return False
        timed = queued_notes.get()
        if timed is not None:
            timed.append(int(queued.id))
        return True

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
