"""Webhook → note: from a signed `ticket.created` to the PUT that writes the private note."""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass

from bench.deliveries import HOOK_PATH, TicketCreated
from devkit.simulators.zendesk import FakeZendesk

# The requester of the `ticket_created__mail.json` fixture and the ticket it creates.
REQUESTER = 8447388090501
REQUESTER_EMAIL = "ann.example@example.com"
FIRST_TICKET = 5141
NEW_TICKETS_FROM = 700001
NOTE_TIMEOUT_S = 10.0
NOTE_MARKER = b"[Carryover ref co-"  # the last line of every note


@dataclass(frozen=True)
class NoteTiming:
    """One webhook's way to its note, in seconds from the moment the webhook was sent."""

    ticket_id: int
    ack_s: float
    note_s: float


def seed_requester(fake: FakeZendesk) -> None:
    """Add the known requester and the ticket they already have."""
    fake.add_user(REQUESTER, "Ann Example", email=REQUESTER_EMAIL,
                  phone="+14155550142")  # fmt: skip
    fake.add_ticket(
        FIRST_TICKET, REQUESTER, "Charged twice for my January invoice", channel="email"
    )


class NoteProbe:
    """Send new tickets of the known requester and time the notes Carryover writes on them."""

    def __init__(self, fake: FakeZendesk, host: str, port: int) -> None:
        self.fake = fake
        self.host = host
        self.port = port
        self.deliveries = TicketCreated("ticket_created__mail.json")
        self.next_ticket = NEW_TICKETS_FROM

    def post(self, ticket_id: int) -> float:
        """Send the ticket.created webhook; return when it was sent (monotonic seconds)."""
        body, headers = self.deliveries.delivery(ticket_id)
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        sent = time.monotonic()
        connection.request("POST", HOOK_PATH, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        if response.status != 200:
            raise RuntimeError(f"the webhook for ticket {ticket_id} got {response.status}")
        return sent

    def introduce(self) -> None:
        """Send the requester's existing ticket, so the next tickets have history (no note)."""
        self.post(FIRST_TICKET)

    def one(self) -> NoteTiming:
        """Create a new ticket in the fake, send its webhook, wait for its note."""
        ticket_id = self.next_ticket
        self.next_ticket += 1
        self.fake.add_ticket(ticket_id, REQUESTER, f"Benchmark ticket {ticket_id}", channel="web")
        seen = len(self.fake.requests_log)
        sent = self.post(ticket_id)
        acked = time.monotonic()
        written = self._wait_for_note(ticket_id, seen)
        return NoteTiming(ticket_id, ack_s=acked - sent, note_s=written - sent)

    def _wait_for_note(self, ticket_id: int, seen: int) -> float:
        """Return when the fake received the PUT on the ticket (its own monotonic stamp)."""
        path = f"/api/v2/tickets/{ticket_id}.json"
        deadline = time.monotonic() + NOTE_TIMEOUT_S
        while time.monotonic() < deadline:
            # The fake appends (method, path, body, monotonic time) for every request.
            for method, request_path, body, received in self.fake.requests_log[seen:]:
                if method == "PUT" and request_path == path and NOTE_MARKER in body:
                    return received
            time.sleep(0.002)
        raise RuntimeError(f"no note on ticket {ticket_id} within {NOTE_TIMEOUT_S}s")
