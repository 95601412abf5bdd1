"""Local simulator of Placetel's Notify API: calls played into Carryover.

Placetel tells an API endpoint about each call with form-encoded POSTs, one per event
(github.com/Placetel/call-control-notify-api, README "Our POST request"):

- an incoming call: IncomingCall, then CallAccepted naming the SIP peer that answered (when
  someone does), then HungUp with its type (accepted, missed, voicemail, blocked) and the
  talking time in duration (0 for a call nobody accepted);
- an outgoing call: OutgoingCall naming the calling SIP user as peer, then HungUp (accepted,
  busy, canceled, unavailable, congestion); Placetel sends no CallAccepted for it.

Every event carries call_id (a SHA-256 in hex) and direction. With a shared secret each POST
carries X-PLACETEL-SIGNATURE, the hex HMAC-SHA256 of the body; without one the simulator
posts to /hooks/placetel/<token> as Zammad's Placetel URL does.

    python -m devkit.simulators.placetel --carryover http://127.0.0.1:8080 --secret S \\
        call --from 030609854180 --to 030600000000 --peer 7777abcdefg@example.com
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import requests

from plugins.placetel import sign

HOOK_PATH = "/hooks/placetel"
INBOUND_ENDINGS = ("accepted", "missed", "voicemail", "blocked")
OUTBOUND_ENDINGS = ("accepted", "busy", "canceled", "unavailable", "congestion")

Params = tuple[tuple[str, str], ...]


class RejectedNotification(Exception):
    """Carryover answered a notification with another status than 200."""

    def __init__(self, status_code: int, reply: str) -> None:
        super().__init__(f"Carryover answered {status_code}: {reply[:300]}")
        self.status_code = status_code
        self.reply = reply


@dataclass(frozen=True)
class Notification:
    """One notification as sent (its parameters, in order) and Carryover's 200 reply."""

    params: Params
    reply: str

    def __getitem__(self, name: str) -> str:
        """Return the value of one parameter."""
        return dict(self.params)[name]


def new_call_id() -> str:
    """Return a fresh call id as Placetel writes one: a SHA-256 in hex."""
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


class PlacetelPbx:
    """Post a Placetel account's call notifications to one Carryover, signed or by token."""

    def __init__(
        self,
        carryover_url: str,
        secret: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not (secret or token):
            raise ValueError("give the shared secret (signs) or the path token (or both)")
        self.carryover_url = carryover_url.rstrip("/")
        self.secret, self.token = secret, token
        self.timeout_s = timeout_s
        self.sent: list[Notification] = []

    @property
    def hook_url(self) -> str:
        """Return the URL notifications go to: with the token in the path when one is given."""
        tail = f"/{quote(self.token, safe='')}" if self.token else ""
        return self.carryover_url + HOOK_PATH + tail

    def send(self, params: Sequence[tuple[str, str]]) -> Notification:
        """POST one notification; raise RejectedNotification unless Carryover says 200."""
        body = urlencode(list(params)).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.secret:
            headers["X-PLACETEL-SIGNATURE"] = sign(self.secret, body)
        response = requests.post(self.hook_url, data=body, headers=headers,
                                 timeout=self.timeout_s)  # fmt: skip
        if response.status_code != 200:
            raise RejectedNotification(response.status_code, response.text)
        sent = Notification(tuple(params), response.text)
        self.sent.append(sent)
        return sent

    def incoming_call(
        self,
        from_: str,
        to: str,
        peer: str | None = None,
        ending: str = "accepted",
        duration_s: int = 0,
    ) -> str:
        """Play an incoming call: it rings, `peer` accepts it (if given), it ends; return its id.

        An ending other than accepted means nobody talked: no CallAccepted, duration 0.
        """
        if ending not in INBOUND_ENDINGS:
            raise ValueError(f"an incoming call ends {', '.join(INBOUND_ENDINGS)}")
        call_id = new_call_id()
        parties = (("from", from_), ("to", to))
        self.send((("call_id", call_id), ("direction", "in"), ("event", "IncomingCall"),
                   *parties))  # fmt: skip
        accepted = ending == "accepted" and peer is not None
        if accepted:
            self.send((("call_id", call_id), ("direction", "in"), ("event", "CallAccepted"),
                       *parties, ("peer", str(peer))))  # fmt: skip
        self._hang_up(call_id, "in", parties, ending, duration_s if accepted else 0)
        return call_id

    def outgoing_call(
        self, peer: str, from_: str, to: str, ending: str = "accepted", duration_s: int = 0
    ) -> str:
        """Play a call the SIP user `peer` makes from the caller id `from_`; return its id."""
        if ending not in OUTBOUND_ENDINGS:
            raise ValueError(f"an outgoing call ends {', '.join(OUTBOUND_ENDINGS)}")
        call_id = new_call_id()
        parties = (("from", from_), ("to", to))
        self.send((("call_id", call_id), ("direction", "out"), ("event", "OutgoingCall"),
                   *parties, ("peer", peer)))  # fmt: skip
        self._hang_up(call_id, "out", parties, ending, duration_s if ending == "accepted" else 0)
        return call_id

    def _hang_up(
        self, call_id: str, direction: str, parties: Params, ending: str, duration_s: int
    ) -> None:
        self.send((("call_id", call_id), ("direction", direction), ("duration", str(duration_s)),
                   ("event", "HungUp"), *parties, ("type", ending)))  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.simulators.placetel",
        description="Play Placetel call notifications into a running Carryover.",
    )
    parser.add_argument("--carryover", default="http://127.0.0.1:8080", help="Carryover's URL")
    secret, token = os.environ.get("PLACETEL_SECRET"), os.environ.get("PLACETEL_TOKEN")
    parser.add_argument("--secret", default=secret, help="the shared secret: signs each POST "
                        "(default $PLACETEL_SECRET)")  # fmt: skip
    parser.add_argument("--token", default=token, help="the path token: /hooks/placetel/<token> "
                        "(default $PLACETEL_TOKEN)")  # fmt: skip
    plays = parser.add_subparsers(dest="play", required=True)
    call = plays.add_parser("call", help="an incoming call: rings, is accepted, ends")
    call.add_argument("--from", dest="from_", required=True, help="the caller's number")
    call.add_argument("--to", required=True, help="the number called")
    call.add_argument("--peer", help="the SIP user who accepts (none: nobody does)")
    call.add_argument("--ending", default="accepted", choices=INBOUND_ENDINGS)
    call.add_argument("--duration", type=int, default=60, help="talking time in seconds")
    out = plays.add_parser("outgoing", help="a call a SIP user makes")
    out.add_argument("--peer", required=True, help="the calling SIP user")
    out.add_argument("--from", dest="from_", required=True, help="the caller id shown")
    out.add_argument("--to", required=True, help="the number dialled")
    out.add_argument("--ending", default="accepted", choices=OUTBOUND_ENDINGS)
    out.add_argument("--duration", type=int, default=60, help="talking time in seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Play one call from the command line and print each notification sent."""
    args = _parser().parse_args(argv)
    if not (args.secret or args.token):
        sys.exit("give --secret or --token (or set PLACETEL_SECRET / PLACETEL_TOKEN)")
    pbx = PlacetelPbx(args.carryover, secret=args.secret, token=args.token)
    try:
        if args.play == "call":
            pbx.incoming_call(args.from_, args.to, args.peer, args.ending, args.duration)
        else:
            pbx.outgoing_call(args.peer, args.from_, args.to, args.ending, args.duration)
    except RejectedNotification as exc:
        sys.exit(str(exc))
    for sent in pbx.sent:
        print(f"{sent['event']:<13} {sent['call_id'][:12]}… 200")


if __name__ == "__main__":
    main()
