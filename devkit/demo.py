"""`carryover demo`: Carryover beside simulated Zendesk, Salesforce, Twilio and a Shopify shop,
playing journeys.

The demo needs no account anywhere. It starts local simulators of the four tools, which
speak their real formats and sign their webhooks; connects them to a fresh Carryover (its own
SQLite store in var/demo/) the way an admin does in the browser; serves Carryover with
`carryover serve`, as in production; then plays the journeys Carryover is for, telling what
happens while notes and pops appear:

1. A Facebook message continued by phone: the call's screen-pop shows the Facebook ticket,
   and the ticket gets a note of the call.
2. A billing error passed from support (Zendesk) to billing (Salesforce) to a manager: the
   case arrives with the ticket's story; billing leaves a handoff note in the pop, the
   manager's pop shows it, and the call transferred from billing to the manager is noted on
   both, handoff note and all.
3. A call on Monday and an email on Wednesday: the email's ticket names Monday's call.
4. Bought online, a chat with the shop's bot, then a call: Dana's Shopify order is refunded
   after she tells the shop's chatbot (a system without a plugin, sending to /hooks/generic)
   and its survey that she prefers the phone; she leaves a voicemail, which Twilio records and
   transcribes; when she calls again, the pop shows the order and its refund, her lines to the
   bot (not the bot's), the words of her message with its recording, and her preference.

With `--history`, the tools first hold a year of made-up history (the three customers' own
past among it), which `carryover backfill` imports before the journeys: their notes and pops
then name that past, as on a real installation's first day.

Afterwards everything stays up for exploring: the admin UI, and each simulated tool's agent
view, where the notes are.
"""

from __future__ import annotations

import html
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from secrets import token_urlsafe

import requests
import yaml

from devkit.history import HistorySummary, seed_history
from devkit.simulators.generic import Customer, GenericSender
from devkit.simulators.salesforce import FakeSalesforce
from devkit.simulators.shopify import LineItem, ShopifyShop
from devkit.simulators.twilio import PhoneCall, TwilioPhone
from devkit.simulators.twilio_rest import FakeTwilio
from devkit.simulators.zendesk import FakeZendesk
from middleware.admin.accounts import create_admin
from middleware.config import load_config
from middleware.ingest import standard_webhooks
from middleware.installation import build_installation
from middleware.integrations.registry import PluginRegistry
from middleware.notes.outbox import MARKER_PATTERN
from middleware.process.backfill import importable, latest_import
from middleware.reads.context_api import signed_path
from middleware.store.sealed import installation_key
from middleware.store.tables import upgrade

ADMIN = "demo"
SUPPORT_LINE = "+14155550100"
BILLING_LINE = "+14155550111"
SHOP = "acme-demo.myshopify.com"  # the simulated shop's domain (nothing is ever called there)
# What billing tells the manager through the pop, so that Bob need not.
HANDOFF_NOTE = ("Bob was charged twice for INV-1042; wants one $49 charge refunded. "
                "Refund approved up to $50 — needs manager sign-off.")  # fmt: skip
ZENDESK_BOT = "carryover@acme.example"
SF_USER = "carryover@acme.example"
WAIT_S = 20.0  # the longest a step waits for Carryover to write a note
HISTORY_SINCE = "365d"
BLENDER_SUBJECT = "Blender arrived with a cracked jug"  # Ann's ticket of the first journey
RECORDS = {"zendesk": "tickets", "salesforce": "cases", "twilio": "calls"}  # what each imports


@dataclass(frozen=True)
class Person:
    """A customer of the demo's company, known to some of the tools."""

    name: str
    email: str
    phone: str
    zendesk_id: int


ANN = Person("Ann Example", "ann@example.com", "+14155550142", 8447388090501)
BOB = Person("Bob Sample", "bob.sample@example.org", "+14155550177", 8447388090502)
CARLA = Person("Carla Rossi", "carla.rossi@example.net", "+14155550199", 8447388090503)
# The fourth journey's customer: known to the shop and its chatbot, not to the helpdesk.
DANA_PHONE = "+14155550123"
DANA = Customer(email="dana.lee@example.com", phone=DANA_PHONE, name="Dana Lee")
# What Dana tells the shop's chatbot (the bot's own lines are not hers).
CHAT_LINES = ("My kettle from order #1001 arrived dented.",
              "Please call me about it, I rarely read my email.")  # fmt: skip
# Her message on the support line's voicemail, as Twilio transcribes it.
VOICEMAIL = ("Hi, it's Dana Lee. Thanks for the refund for the dented kettle, but I would "
             "rather have a new one. Please call me back.")  # fmt: skip

# What --history adds to the made-up history for them: who, days ago, channel, subject, text.
PAST_TICKETS = (
    (ANN, 24, "chat", "When does order 4411 ship?",
     "Hi, I ordered a blender (order 4411) last week. When will it ship?"),
    (BOB, 210, "email", "Invoice with my company name",
     "Could you send the invoice for my last order with my company's name on it?"),
    (CARLA, 150, "email", "Kettle stopped heating",
     "My kettle stopped heating after two months. Can I send it back?"),
)  # fmt: skip


@dataclass(frozen=True)
class Secrets:
    """What the admin types in once: their password and the tools' credentials."""

    admin_password: str = field(default_factory=lambda: token_urlsafe(12))
    zendesk_token: str = field(default_factory=lambda: token_urlsafe(16))
    zendesk_webhook: str = field(default_factory=lambda: token_urlsafe(32))
    salesforce_password: str = field(default_factory=lambda: token_urlsafe(12))
    salesforce_token: str = field(default_factory=lambda: token_urlsafe(12))
    twilio_token: str = field(default_factory=lambda: token_urlsafe(24))
    shopify_webhook: str = field(default_factory=lambda: token_urlsafe(32))
    generic_secret: str = field(default_factory=standard_webhooks.generate_secret)


@dataclass
class Demo:
    """The running demo: Carryover's URL, the simulators, and how to reach the admin UI."""

    url: str
    folder: Path
    secrets: Secrets
    link_secret: str
    zendesk: FakeZendesk
    salesforce: FakeSalesforce
    phone: TwilioPhone
    inbound: GenericSender  # the shop's chatbot and survey tool, through /hooks/generic
    bob_contact: str
    pace: float
    say: Callable[[str], None]
    history: HistorySummary | None = None  # what --history seeded (and then imported)
    shop: ShopifyShop | None = None  # the online shop, sending its order webhooks

    def pause(self, beats: float = 1.0) -> None:
        """Give the watcher time to look (nothing in tests, where pace is 0)."""
        time.sleep(self.pace * beats)

    def new_note(self, ticket: int, seen: int, what: str) -> str:
        """Wait for a ticket's note after its first `seen` ones; return that note's body."""
        self.wait_for(what, lambda: len(self.zendesk.notes(ticket)) > seen)
        return str(self.zendesk.notes(ticket)[seen]["body"])

    def pop_link(self, phone: str) -> str:
        """Return a signed screen-pop link for a caller, as a softphone would open it."""
        return self.url + signed_path(self.link_secret, "/pop", {"phone": phone}, 4 * 3600)

    def pop_page(self, phone: str) -> str:
        """Return the screen-pop page of a caller as the agent's browser gets it."""
        response = requests.get(self.pop_link(phone), timeout=5)
        response.raise_for_status()
        return response.text

    def leave_handoff_note(self, phone: str, text: str) -> None:
        """Type a handoff note in a caller's pop and save it, as the page's script sends it."""
        found = re.search(r'<form id="handoff"[^>]* data-url="([^"]+)"', self.pop_page(phone))
        if found is None:
            raise RuntimeError("the screen-pop has no handoff form")
        response = requests.post(self.url + html.unescape(found.group(1)), json={"text": text},
                                 timeout=5)  # fmt: skip
        if response.status_code != 201:
            raise RuntimeError(f"the handoff note was refused: {response.text}")

    def wait_for(self, what: str, done: Callable[[], object]) -> None:
        """Wait until Carryover has done something the simulators can see."""
        deadline = time.monotonic() + WAIT_S
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Carryover did not {what} within {WAIT_S:.0f} s")
            time.sleep(0.05)


# -- setting up ---------------------------------------------------------------------------------
@contextmanager
def running_demo(
    folder: Path,
    port: int,
    pace: float,
    say: Callable[[str], None] = print,
    *,
    history: bool = False,
) -> Iterator[Demo]:
    """Start the simulators and Carryover, connected; stop them all on leaving.

    With `history`, the tools first hold a year of history, which `carryover backfill`
    imports (its progress on this process's terminal) before Carryover serves.
    """
    _fresh_folder(folder)  # a fresh store each time: the journeys start from nothing
    _check_port_free(port)
    url = f"http://127.0.0.1:{port}"
    secrets = Secrets()
    zendesk = FakeZendesk(email=ZENDESK_BOT, api_token=secrets.zendesk_token)
    salesforce = FakeSalesforce(username=SF_USER, password=secrets.salesforce_password,
                                security_token=secrets.salesforce_token)  # fmt: skip
    # Twilio's REST API (the call log) is only read by an import: no fake of it otherwise.
    twilio = FakeTwilio(auth_token=secrets.twilio_token) if history else None
    with ExitStack() as fakes:
        for fake in (zendesk, salesforce, twilio):
            if fake is not None:
                fakes.enter_context(fake)
        bob_contact = _seed(zendesk, salesforce)
        seeded = _seed_history(zendesk, salesforce, twilio, bob_contact, say) if twilio else None
        config_file = _write_config(folder, url)
        link_secret = _install(config_file, secrets, zendesk, salesforce, twilio)
        if seeded is not None:
            _import_history(config_file, say)
        zendesk.subscribe(f"{url}/hooks/zendesk", secrets.zendesk_webhook)
        salesforce.subscribe(f"{url}/hooks/salesforce")
        with _serving(config_file, port, folder / "carryover.log"):
            phone = TwilioPhone(url, secrets.twilio_token, pause=pace)
            shop = ShopifyShop(url, secrets.shopify_webhook, SHOP)
            inbound = GenericSender(url, secrets.generic_secret)
            yield Demo(url, folder, secrets, link_secret, zendesk, salesforce, phone, inbound,
                       bob_contact, pace, say, seeded, shop)  # fmt: skip


MARKER = ".carryover-demo"  # the demo's folders hold it: only those are ever emptied


class DemoRefused(RuntimeError):
    """The demo cannot start as asked (a folder it must not empty, a port in use)."""


def _fresh_folder(folder: Path) -> None:
    """Empty the demo's folder of an earlier demo, or make it; never remove anything else.

    `--folder var` would otherwise delete the real store and its key.
    """
    if folder.exists():
        if not folder.is_dir() or (any(folder.iterdir()) and not (folder / MARKER).is_file()):
            raise DemoRefused(f"{folder} exists and is not a demo's folder (it has no {MARKER}): "
                              "it is left as it is; choose another --folder")  # fmt: skip
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by carryover demo: emptied by the next one\n")


def _check_port_free(port: int) -> None:
    """Refuse a port something listens on: the journeys would play against it."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise DemoRefused(f"port {port} is in use on 127.0.0.1: stop what listens there, "
                              "or choose another with --port") from None  # fmt: skip


def _seed(zendesk: FakeZendesk, salesforce: FakeSalesforce) -> str:
    """Add the customers as each tool knows them; return Bob's Salesforce contact id."""
    for person in (ANN, BOB, CARLA):
        extra = [{"type": "facebook", "value": "100001234567890"}] if person is ANN else None
        zendesk.add_user(person.zendesk_id, person.name, email=person.email,
                         phone=person.phone, extra_identities=extra)  # fmt: skip
    first, last = BOB.name.split()
    return salesforce.add_contact(first, last, email=BOB.email, phone=BOB.phone)


def _seed_history(
    zendesk: FakeZendesk,
    salesforce: FakeSalesforce,
    twilio: FakeTwilio,
    bob_contact: str,
    say: Callable[[str], None],
) -> HistorySummary:
    """Fill the tools with a year of other customers' history and the demo people's past."""
    ours = {person.phone for person in (ANN, BOB, CARLA)} | {SUPPORT_LINE, BILLING_LINE}
    # Big enough to look like a year of a small team's support, small enough for seconds.
    summary = seed_history(zendesk, salesforce, twilio, requesters=150, tickets=600, cases=100,
                           calls=120, reserved_phones=ours)  # fmt: skip
    _add_past(zendesk, salesforce, twilio, bob_contact)
    say(f"Day one: the tools already hold a year of history: {summary.tickets:,} Zendesk "
        f"tickets of {summary.requesters:,} customers, {summary.cases:,} Salesforce cases, "
        f"{summary.calls:,} entries in Twilio's call log (all made up), Ann, Bob and Carla's "
        "past among them.")  # fmt: skip
    return summary


def _add_past(
    zendesk: FakeZendesk, salesforce: FakeSalesforce, twilio: FakeTwilio, bob_contact: str
) -> None:
    """Give Ann, Bob and Carla a past in the tools, long settled, for the notes to name."""
    now = datetime.now(UTC).replace(microsecond=0)
    for ticket_id, (who, days, channel, subject, text) in enumerate(
        PAST_TICKETS, max(zendesk.tickets) + 1
    ):
        at = now - timedelta(days=days)
        zendesk.add_ticket(ticket_id, who.zendesk_id, subject, "closed", channel,
                           description=text, at=at, updated=at + timedelta(days=2))  # fmt: skip
    salesforce.add_case("Card expired: update the monthly plan", bob_contact, "Phone", "Closed",
                        "Bob's card expired; he updated it by phone and the plan went on.",
                        at=now - timedelta(days=95), updated=now - timedelta(days=94))  # fmt: skip
    sid = twilio.add_call(ANN.phone, SUPPORT_LINE, start=now - timedelta(days=23), duration_s=95)
    twilio.add_call(ANN.phone, "client:noor", start=now - timedelta(days=23), duration_s=90,
                    direction="outbound-dial", parent_call_sid=sid)  # fmt: skip


def _import_history(config_file: Path, say: Callable[[str], None]) -> None:
    """Run `carryover backfill` as an admin would, its progress on this terminal."""
    command = [sys.executable, "-m", "middleware.cli", "backfill", "--since", HISTORY_SINCE,
               "--config", str(config_file)]  # fmt: skip
    say(f"Importing it first: carryover backfill --since {HISTORY_SINCE} --config {config_file}")
    sys.stdout.flush()  # what was said comes before what the import prints
    if subprocess.run(command, check=False).returncode != 0:
        raise RuntimeError("carryover backfill did not finish; see its messages above")
    say("Imported, with no note written anywhere: " + _imported(config_file) + ". The "
        "journeys' notes and pops now name the past.")  # fmt: skip


def _imported(config_file: Path) -> str:
    """Say how many records each integration's import took in, from the store."""
    registry = PluginRegistry.from_entry_points()
    core = build_installation(load_config(config_file, registry.schemas()), registry)
    try:
        with core.engine.connect() as conn:
            states = [(p.key, p.short_title or p.title, latest_import(conn, p.key))
                      for p in importable(core)]  # fmt: skip
    finally:
        core.dispose()
    return ", ".join(
        f"{state.imported:,} {RECORDS.get(key, 'records')} from {title}"
        for key, title, state in states
        if state
    )


def _write_config(folder: Path, url: str) -> Path:
    """Write the demo's configuration: its own store; integrations come from the admin UI."""
    path = folder / "config.yaml"
    config = {
        "public_url": url,
        "database_url": f"sqlite:///{folder.resolve() / 'carryover.db'}",
        "worker": {"poll_interval_s": 0.2},
        "allow_private_upstreams": True,  # the simulated tools listen on 127.0.0.1
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _install(
    config_file: Path,
    secrets: Secrets,
    zendesk: FakeZendesk,
    salesforce: FakeSalesforce,
    twilio: FakeTwilio | None = None,
) -> str:
    """Migrate, create the admin and connect the tools as in the browser; return the key.

    With Twilio's REST API (`twilio`), its account and URL are connected too, so that its
    calls can be imported, and Zendesk's export is read as fast as the fake answers.
    """
    registry = PluginRegistry.from_entry_points()
    config = load_config(config_file, registry.schemas())
    core = build_installation(config, registry)
    try:
        upgrade(core.engine)
        create_admin(core.engine, ADMIN, secrets.admin_password)
        connect = core.integrations.connect
        # 0: the export as fast as the fake answers (one page); Zendesk's own limit is 10.
        unpaced = {"export_requests_per_minute": 0} if twilio else {}
        connect("zendesk", {"url": zendesk.url, "email": ZENDESK_BOT,
                            "api_token": secrets.zendesk_token,
                            "webhook_secret": secrets.zendesk_webhook, **unpaced},
                ADMIN)  # fmt: skip
        connect("salesforce", {"organization_id": salesforce.org_id,
                               "instance_url": salesforce.url, "login_url": salesforce.url,
                               "username": SF_USER, "password": secrets.salesforce_password,
                               "security_token": secrets.salesforce_token}, ADMIN)  # fmt: skip
        calls = {"account_sid": twilio.account_sid, "api_url": twilio.api_url} if twilio else {}
        connect("twilio", {"auth_token": secrets.twilio_token, **calls}, ADMIN)
        connect("shopify", {"shop_url": f"https://{SHOP}",
                            "webhook_secret": secrets.shopify_webhook}, ADMIN)  # fmt: skip
        connect("generic", {"secret": secrets.generic_secret}, ADMIN)
    finally:
        core.dispose()
    key = installation_key(config)
    assert key, "an SQLite installation always has a key"
    return key


@contextmanager
def _serving(config_file: Path, port: int, log: Path) -> Iterator[None]:
    """Run `carryover serve` on the demo's configuration until the block ends."""
    command = [sys.executable, "-m", "middleware.cli", "serve", "--config", str(config_file),
               "--port", str(port)]  # fmt: skip
    with log.open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_ready(f"http://127.0.0.1:{port}/readyz", server, log)
            yield
        finally:
            server.terminate()
            server.wait(timeout=10)


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"carryover serve stopped: {log.read_text(errors='replace')}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"carryover serve did not become ready; see {log}")


# -- the journeys -------------------------------------------------------------------------------
def facebook_then_phone(demo: Demo) -> int:
    """Ann writes on Facebook, then calls: the pop shows the message, the ticket the call."""
    say, zendesk = demo.say, demo.zendesk
    say("\n1. A Facebook message, continued by phone")
    ticket = zendesk.open_ticket(
        ANN.zendesk_id, BLENDER_SUBJECT,
        "Hi! The blender from order 4411 arrived with a cracked jug. Can you send a new one?",
        channel="facebook",
    )  # fmt: skip
    if demo.history is None:
        say(f"   Ann writes on Facebook: Zendesk ticket #{ticket}. A first contact: no note.")
    else:
        note = demo.new_note(ticket, 0, "write Ann's past into the ticket")
        say(f"   Ann writes on Facebook: Zendesk ticket #{ticket}. She is no stranger: its "
            "note names her imported past:")  # fmt: skip
        show_note(say, note)
    seen = len(zendesk.notes(ticket))
    demo.pause(2)
    say(f"   Ann calls the support line. Her screen-pop: {demo.pop_link(ANN.phone)}")
    call = demo.phone.ring(ANN.phone, SUPPORT_LINE)
    demo.pause(3)
    call.answer("sam")
    say("   Sam answers, and sees the Facebook message on the pop without asking.")
    demo.pause(3)
    call.hang_up(duration_s=184)
    note = demo.new_note(ticket, seen, "note the call on the ticket")
    say(f"   The call ends: Carryover notes it on ticket #{ticket}, where the next agent looks:")
    show_note(say, note)
    return ticket


def billing_transfers(demo: Demo) -> tuple[int, str]:
    """Bob's double charge goes from support to billing to a manager, told once."""
    say, zendesk, salesforce = demo.say, demo.zendesk, demo.salesforce
    say("\n2. A billing error, from support to billing to a manager")
    ticket = zendesk.open_ticket(
        BOB.zendesk_id, "Charged twice for invoice INV-1042",
        "Hello, my card was charged $49 twice for invoice INV-1042. Please refund one charge.",
        channel="email",
    )  # fmt: skip
    if demo.history is None:
        say(f"   Bob emails support: Zendesk ticket #{ticket}. Support hands it to billing.")
    else:
        note = demo.new_note(ticket, 0, "write Bob's past into the ticket")
        say(f"   Bob emails support: Zendesk ticket #{ticket}, noted with his imported past:")
        show_note(say, note)
        say("   Support hands it to billing.")
    seen = len(zendesk.notes(ticket))
    demo.pause(2)
    # Billing opens the case by hand (Origin Phone): its description is the agent's words,
    # so the case's note quotes what Bob himself wrote to support, not billing's summary.
    case = salesforce.open_case(demo.bob_contact, "Double charge on INV-1042",
                                "Refund one of the two $49 charges.", origin="Phone")  # fmt: skip
    demo.wait_for("comment on the case", lambda: salesforce.comments(case))
    number = salesforce.case(case)["CaseNumber"]  # as billing knows the case, not its Id
    say(f"   Billing opens Salesforce case {number}: its comment already tells ticket "
        f"#{ticket}'s story:")  # fmt: skip
    show_note(say, salesforce.comments(case)[0]["CommentBody"])
    note = demo.new_note(ticket, seen, "tell the ticket about the case")
    say(f"   Support's ticket #{ticket} learns of the case at once:")
    show_note(say, note)
    demo.pause(2)
    say(f"   Bob calls billing. His screen-pop: {demo.pop_link(BOB.phone)}")
    call = demo.phone.ring(BOB.phone, BILLING_LINE)
    demo.pause(2)
    call.answer("mia")
    demo.wait_for("show mia in the pop", lambda: "Answered by mia" in demo.pop_page(BOB.phone))
    say("   Mia in billing answers; the refund needs a manager. Before she transfers the "
        "call, she types a handoff note in the pop:")  # fmt: skip
    demo.leave_handoff_note(BOB.phone, HANDOFF_NOTE)
    say(f"     │ {HANDOFF_NOTE}")
    demo.pause(3)
    call.transfer_to("lee")
    demo.wait_for("show the transfer in the pop", lambda: "→ lee" in demo.pop_page(BOB.phone))
    say("   Lee, the manager, gets the call: his pop shows mia's handoff note, the transfer "
        "and the case, so Bob need not tell it a third time.")  # fmt: skip
    demo.pause(3)
    call.hang_up(duration_s=420)
    demo.wait_for("note the call on the case", lambda: len(salesforce.comments(case)) >= 2)
    note = demo.new_note(ticket, seen + 1, "note the call on the ticket")
    say(f"   The call ends: noted on case {number} and on ticket #{ticket}, with mia's "
        "handoff note:")  # fmt: skip
    show_note(say, note)
    return ticket, case


def show_note(say: Callable[[str], None], body: str) -> None:
    """Show a note as the agent reads it, without the marker line that is Carryover's own."""
    for line in MARKER_PATTERN.sub("", body).strip().splitlines():
        say(f"     │ {line}")


def monday_call_wednesday_email(demo: Demo) -> int:
    """Carla calls on Monday and emails on Wednesday: the email's ticket names the call."""
    say, zendesk, phone = demo.say, demo.zendesk, demo.phone
    say("\n3. A call on Monday, an email on Wednesday")
    monday = datetime.now(UTC) - timedelta(days=2)
    phone.clock = lambda: monday
    try:
        call = phone.ring(CARLA.phone, SUPPORT_LINE)
        call.answer("sam")
        call.hang_up(duration_s=260)
    finally:
        phone.clock = lambda: datetime.now(UTC)
    if demo.history is None:
        say("   Monday: Carla calls about a refund for a returned kettle. Nobody knows her "
            "number yet.")  # fmt: skip
    else:
        say(
            "   Monday: Carla calls about a refund for a returned kettle. Her number came in "
            "with her Zendesk profile, imported with her old ticket: the call is hers."
        )
    demo.pause(2)
    ticket = zendesk.open_ticket(
        CARLA.zendesk_id, "Still no refund for my returned kettle",
        "I called on Monday about the refund for the kettle I sent back. Any news?",
        channel="email",
    )  # fmt: skip
    demo.wait_for("note Monday's call on the ticket", lambda: zendesk.notes(ticket))
    if demo.history is None:
        say(f"   Wednesday: she emails. Ticket #{ticket} gets a note with Monday's call: her "
            "Zendesk profile has the number she called from.")  # fmt: skip
    else:
        say(f"   Wednesday: she emails. Ticket #{ticket} gets a note with Monday's call and "
            "the kettle's earlier, imported ticket:")  # fmt: skip
    show_note(say, zendesk.notes(ticket)[-1]["body"])
    return ticket


def bought_chatted_called(demo: Demo) -> PhoneCall:
    """Dana buys online, chats with the shop's bot, then calls: her pop holds all of it."""
    say, shop, phone = demo.say, demo.shop, demo.phone
    assert shop is not None, "the demo's shop sends the order"
    say("\n4. Bought online, a chat with the shop's bot, then a call")
    kettle = shop.order([LineItem("Glass kettle", 1, Decimal("39.00"))], DANA.email,
                        DANA_PHONE, ("Dana", "Lee"))  # fmt: skip
    say(f"   Dana buys a kettle in the shop: Shopify order #{kettle.number} joins her timeline "
        "(an order is no ticket: no note).")  # fmt: skip
    demo.pause(2)
    demo.inbound.chat(DANA, CHAT_LINES, topic="Dented kettle")
    shop.refund(kettle, kettle.total, note="arrived dented")
    demo.inbound.survey(DANA, ["phone"], "Quick answers, thanks.")
    say("   It arrives dented. She tells the shop's chatbot (a system without a plugin, sending "
        f"Standard Webhooks to /hooks/generic); the shop refunds {kettle.total} "
        f"{kettle.currency}, and the after-chat survey says she prefers the phone.")  # fmt: skip
    demo.pause(2)
    evening = phone.ring(DANA_PHONE, SUPPORT_LINE)
    evening.answer()  # nobody is in: Twilio's <Record> takes a message
    evening.hang_up(duration_s=21)
    evening.record()
    evening.transcribe(VOICEMAIL)
    demo.wait_for("take in the voicemail's words and its recording",
                  lambda: _heard(demo.pop_page(DANA_PHONE)))  # fmt: skip
    say("   In the evening she calls; nobody is in, and she leaves a message. Twilio records "
        "and transcribes it:")  # fmt: skip
    say(f'     │ "{VOICEMAIL}"')
    demo.pause(2)
    morning = phone.ring(DANA_PHONE, SUPPORT_LINE)
    say(f"   The next morning she calls again. Her screen-pop: {demo.pop_link(DANA_PHONE)}")
    say("   It shows the order and its refund, what she told the bot (her lines, not the "
        "bot's), the words of her message with a link to its recording, and that she "
        "prefers the phone: Sam answers without asking her to start over.")  # fmt: skip
    morning.answer("sam")
    # The pop is about this call once Carryover has taken it in: wait for it, as sam would.
    demo.wait_for("pop up the morning call, answered by sam",
                  lambda: "Answered by sam" in demo.pop_page(DANA_PHONE))  # fmt: skip
    demo.pause(3)
    morning.hang_up(duration_s=150)
    return morning


def _heard(pop: str) -> bool:
    """Whether the pop holds the voicemail's words and its recording, two callbacks apart."""
    return "rather have a new one" in pop and ">recording</a>" in pop.lower()


JOURNEYS = (facebook_then_phone, billing_transfers, monday_call_wednesday_email,
            bought_chatted_called)  # fmt: skip


def play(demo: Demo) -> None:
    """Play every journey, in order."""
    for journey in JOURNEYS:
        journey(demo)
        demo.pause(2)
    demo.zendesk.wait_for_echoes()  # Carryover's notes, coming back as Zendesk sends them


def run(folder: Path, port: int, pace: float, exit_after: bool, history: bool = False) -> int:
    """Run `carryover demo`: play the journeys, then keep everything up until Ctrl-C."""
    # SIGTERM (kill, a service manager) ends the demo as Ctrl-C does: the `carryover serve`
    # it started and the simulators stop with it instead of being left behind.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with running_demo(folder, port, pace, history=history) as demo:
            print(f"carryover demo: Carryover at {demo.url}, the tools simulated beside it")
            play(demo)
            print(explore(demo, staying=not exit_after))
            if exit_after:
                return 0
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"carryover demo: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def explore(demo: Demo, staying: bool = True) -> str:
    """Return what to look at next, with the URLs and the admin's password."""
    history = "; each one's History: what was imported" if demo.history else ""
    end = "Ctrl-C stops the demo." if staying else "The demo stops now (--exit)."
    return f"""
Carryover is serving at {demo.url} (its log: {demo.folder / "carryover.log"}).

  Admin UI         {demo.url}/admin/   user {ADMIN}, password {demo.secrets.admin_password}
  Zendesk agents   {demo.zendesk.url}/   the tickets and Carryover's private notes
  Salesforce       {demo.salesforce.url}/   the cases and Carryover's case comments
  Ann's pop        {demo.pop_link(ANN.phone)}

In the admin UI: Customers (search "Ann", split or merge an identity), Deliveries (every
webhook and note, replay), Mappings (live preview), Integrations (the five integrations, connected
from the admin UI: test a connection{history}). {end}
"""
