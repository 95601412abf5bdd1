"""A year of made-up support history in the simulators, for `carryover backfill` to import.

seed_history() fills a FakeZendesk, a FakeSalesforce and a FakeTwilio with the same people
seen from three tools, as a real company's history looks: customers who write by email, chat
or social media and call, some known in the CRM under the same email but another phone, a
family sharing a line, a few with no email at all. The same seed gives the same history, so
tests can count on it; the summary names a few customers found in more than one tool.

    python -m devkit.history --serve     # the three fakes, seeded, until Ctrl-C
"""

from __future__ import annotations

import argparse
import random
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from devkit.simulators.salesforce import FakeSalesforce
from devkit.simulators.twilio_rest import FakeTwilio
from devkit.simulators.zendesk import FakeZendesk

SUPPORT_LINE = "+14155550100"
FIRST_USER_ID = 20000000001
FIRST_AGENT_ID = 19000000001
FIRST_TICKET_ID = 10001
# New Zendesk changes wait a minute before an export returns them: stay clear of it.
NEWEST_AGE = timedelta(minutes=5)
AREA_CODES = ("415", "212", "312", "617", "206", "512", "303", "404")
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
FIRST_NAMES = (
    "Ann", "Bob", "Carla", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi",
    "Luca", "Maya", "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera",
    "Wen", "Ximena", "Yusuf", "Zoe", "Aaron", "Bea", "Chen", "Dana", "Emil", "Fatima",
)  # fmt: skip
LAST_NAMES = (
    "Lee", "Diaz", "Okafor", "Novak", "Schmidt", "Rossi", "Tanaka", "Haddad", "Kowalski",
    "Moreau", "Silva", "Johansson", "Murphy", "Kaur", "Nguyen", "Petrov", "Garcia", "Cohen",
    "Adeyemi", "Larsen", "Fischer", "Ibrahim", "Costa", "Walsh",
)  # fmt: skip
AGENTS = ("Mia Support", "Lee Support", "Sam Support", "Noor Support", "Ivo Support", "Kai Support")
# What customers write about: a subject and their first message ({order}, {day}, {product}).
TOPICS = (
    ("Refund not received", "Hi, I returned order #{order} on {day} and the refund still "
     "hasn't reached my card. Could you check where it is?"),
    ("Charged twice", "I was charged twice for order #{order}. Please refund one of the "
     "charges, my bank statement shows both."),
    ("Where is my order?", "My order #{order} was supposed to arrive on {day}. The tracking "
     "page hasn't changed in days."),
    ("Wrong item delivered", "I ordered the {product} but the box had something else in it. "
     "Order #{order}."),
    ("Cannot log in", "The password reset email never arrives, so I can't log in to my "
     "account. I've checked the spam folder."),
    ("Change delivery address", "Can I still change the delivery address for order #{order}? "
     "I'm moving on {day}."),
    ("Broken on arrival", "The {product} arrived cracked. I'd like a replacement, photos "
     "attached."),
    ("Cancel my subscription", "Please cancel my subscription at the end of this month and "
     "confirm by email."),
    ("Invoice needed", "Could you send me an invoice with my company name for order "
     "#{order}? Our accountant needs it."),
    ("Discount code not working", "The code from your newsletter is refused at checkout for "
     "the {product}."),
    ("Question about warranty", "How long is the warranty on the {product}? Mine stopped "
     "working after {months} months."),
    ("Thank you!", "Just wanted to say the replacement {product} works perfectly. Thanks for "
     "the quick help."),
)  # fmt: skip
PRODUCTS = (
    "kettle",
    "desk lamp",
    "headphones",
    "coffee grinder",
    "backpack",
    "smart plug",
    "blender",
    "office chair",
)
# Zendesk channels and how often each opens a ticket; messaging is native_messaging in REST.
CHANNELS = {
    "email": 34,
    "web": 18,
    "chat": 12,
    "voice": 11,
    "native_messaging": 9,
    "api": 6,
    "facebook": 5,
    "twitter": 5,
}
NO_EMAIL_CHANNELS = ("voice", "native_messaging", "chat")
CASE_ORIGINS = {"Email": 5, "Phone": 3, "Web": 2}


@dataclass(frozen=True)
class Person:
    """One made-up customer, as every tool may know them."""

    user_id: int
    name: str
    email: str | None
    phone: str
    twitter: str | None = None
    facebook: str | None = None


@dataclass(frozen=True)
class SampleCustomer:
    """A customer found in Zendesk and in Salesforce, with what each tool holds of them."""

    name: str
    email: str
    phone: str
    zendesk_user_id: int
    ticket_ids: tuple[int, ...]
    case_ids: tuple[str, ...]
    call_sids: tuple[str, ...]


@dataclass(frozen=True)
class HistorySummary:
    """What seed_history() made: counts, and a few customers with tickets and cases."""

    requesters: int
    agents: int
    tickets: int
    contacts: int
    cases: int
    calls: int
    in_both: tuple[SampleCustomer, ...]


@dataclass
class _Made:
    """What has been made so far, per person, to pick the samples from."""

    tickets: dict[int, list[int]] = field(default_factory=dict)
    cases: dict[int, list[str]] = field(default_factory=dict)
    calls: dict[int, list[str]] = field(default_factory=dict)
    contacts: int = 0
    call_count: int = 0


def seed_history(
    zendesk: FakeZendesk | None = None,
    salesforce: FakeSalesforce | None = None,
    twilio: FakeTwilio | None = None,
    *,
    requesters: int = 500,
    tickets: int = 2000,
    cases: int = 300,
    calls: int = 400,
    days: int = 365,
    seed: int = 0,
    now: datetime | None = None,
    reserved_phones: Collection[str] = (),
) -> HistorySummary:
    """Fill the given fakes with `days` of history of the same `requesters` and summarise it.

    Deterministic for a seed and `now` (default: this minute); Salesforce ids are too when
    the fake is fresh. `calls` counts inbound calls; answered ones add their agent's leg.
    No made-up record carries a number of `reserved_phones` (people the caller adds itself).
    """
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(second=0, microsecond=0) - NEWEST_AGE
    people = make_people(rng, requesters, reserved_phones)
    made = _Made()
    agent_ids = _add_people(zendesk, people) if zendesk else []
    if zendesk is not None:
        _add_tickets(zendesk, rng, people, agent_ids, tickets, days, now, made)
    if salesforce is not None:
        _add_cases(salesforce, rng, people, cases, days, now, made, reserved_phones)
    if twilio is not None:
        _add_calls(twilio, rng, people, calls, days, now, made)
    return HistorySummary(
        requesters=len(people) if zendesk else 0,
        agents=len(agent_ids),
        tickets=sum(len(ids) for ids in made.tickets.values()),
        contacts=made.contacts,
        cases=sum(len(ids) for ids in made.cases.values()),
        calls=made.call_count,
        in_both=_samples(people, made),
    )


def make_people(
    rng: random.Random, count: int, reserved_phones: Collection[str] = ()
) -> list[Person]:
    """Make `count` customers: names, emails, +1 555-01xx phones, some social identities."""
    numbers = [phone for phone in _numbers() if phone not in reserved_phones]
    rng.shuffle(numbers)
    if count > len(numbers):
        raise ValueError(f"at most {len(numbers)} requesters have a number of their own")
    people: list[Person] = []
    for index in range(count):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        phone = numbers[index]
        if people and rng.random() < 0.02:
            # A family line: someone of the same family, on the same phone.
            relative = rng.choice(people)
            last, phone = relative.name.split()[-1], relative.phone
        people.append(_person(rng, FIRST_USER_ID + index, first, last, phone, index))
    return people


def _numbers() -> list[str]:
    """Return every number the made-up people may have: +1 555-0100 to 0199 per area."""
    return [f"+1{area}55501{n:02d}" for area in AREA_CODES for n in range(100)]


def _person(
    rng: random.Random, user_id: int, first: str, last: str, phone: str, index: int
) -> Person:
    domain = EMAIL_DOMAINS[index % len(EMAIL_DOMAINS)]
    email = None if rng.random() < 0.03 else f"{first}.{last}{index}@{domain}".lower()
    twitter = f"@{first}{last}{index}".lower() if rng.random() < 0.08 else None
    facebook = str(100000000000000 + index) if rng.random() < 0.08 else None
    return Person(user_id, f"{first} {last}", email, phone, twitter, facebook)


def _add_people(zendesk: FakeZendesk, people: Sequence[Person]) -> list[int]:
    """Add the customers as end users with their identities, and the agents; return agent ids."""
    for person in people:
        extra = [{"type": "twitter", "value": person.twitter}] if person.twitter else []
        extra += [{"type": "facebook", "value": person.facebook}] if person.facebook else []
        zendesk.add_user(
            person.user_id,
            person.name,
            email=person.email,
            phone=person.phone,
            extra_identities=extra,
        )
    agent_ids = []
    for offset, name in enumerate(AGENTS):
        email = f"{name.split()[0].lower()}@support.example.com"
        agent_ids.append(zendesk.add_agent(FIRST_AGENT_ID + offset, name, email=email)["id"])
    return agent_ids


def _when(rng: random.Random, days: int, now: datetime) -> datetime:
    """Pick a moment in the last `days` days, more of them recent, as support volume grows."""
    age = days * (1 - rng.random() ** 0.8)
    return (now - timedelta(days=age)).replace(microsecond=0)


def _later(rng: random.Random, start: datetime, now: datetime) -> datetime:
    """Pick when a record last changed: hours to days after it began, never past `now`."""
    return min(start + timedelta(hours=rng.expovariate(1 / 30)), now).replace(microsecond=0)


def _first_message(rng: random.Random, created: datetime) -> tuple[str, str]:
    """Return a subject and the customer's first message about it."""
    subject, text = rng.choice(TOPICS)
    earlier = created - timedelta(days=rng.randint(2, 12))
    day = f"{earlier:%B} {earlier.day}"
    values = {
        "order": rng.randint(100000, 999999),
        "day": day,
        "product": rng.choice(PRODUCTS),
        "months": rng.randint(2, 20),
    }
    return subject, text.format(**values)


def _ticket_status(rng: random.Random, age: timedelta) -> str:
    """Return a status as tickets of that age have: closed mostly when old."""
    if age > timedelta(days=30):
        return rng.choices(("closed", "solved"), (85, 15))[0]
    if age > timedelta(days=7):
        return rng.choices(("solved", "closed", "pending", "open"), (50, 30, 10, 10))[0]
    return rng.choices(("new", "open", "pending", "solved"), (30, 40, 20, 10))[0]


def _add_tickets(
    zendesk: FakeZendesk,
    rng: random.Random,
    people: Sequence[Person],
    agent_ids: Sequence[int],
    count: int,
    days: int,
    now: datetime,
    made: _Made,
) -> None:
    """Open `count` tickets, a few customers writing often, most once or twice."""
    weights = [rng.paretovariate(1.5) for _ in people]
    first_id = max(max(zendesk.tickets, default=0) + 1, FIRST_TICKET_ID)
    for ticket_id in range(first_id, first_id + count):
        person = rng.choices(people, weights)[0]
        channels = NO_EMAIL_CHANNELS if person.email is None else tuple(CHANNELS)
        channel = rng.choices(channels, [CHANNELS[c] for c in channels])[0]
        created = _when(rng, days, now)
        status = _ticket_status(rng, now - created)
        subject, description = _first_message(rng, created)
        assigned = status != "new" and rng.random() < 0.85
        zendesk.add_ticket(
            ticket_id,
            person.user_id,
            subject,
            status,
            channel,
            description=description,
            at=created,
            updated=_later(rng, created, now),
            assignee_id=rng.choice(agent_ids) if assigned else None,
            priority=rng.choice((None, "low", "normal", "normal", "high", "urgent")),
        )
        made.tickets.setdefault(person.user_id, []).append(ticket_id)


def _add_cases(
    salesforce: FakeSalesforce,
    rng: random.Random,
    people: Sequence[Person],
    count: int,
    days: int,
    now: datetime,
    made: _Made,
    reserved_phones: Collection[str] = (),
) -> None:
    """Open `count` cases of a subset of the customers, mostly on a Contact of the same email."""
    known = [person for person in people if person.email]
    subset = rng.sample(known, min(len(known), max(count // 2, 1)))
    contacts: dict[int, str] = {}
    for _ in range(count):
        person = rng.choice(subset)
        created = _when(rng, days, now)
        subject, description = _first_message(rng, created)
        # A web-to-case has no contact, only what the customer typed in.
        web_to_case = rng.random() < 0.15
        if not web_to_case and person.user_id not in contacts:
            contacts[person.user_id] = _add_contact(salesforce, rng, person, reserved_phones)
        case_id = salesforce.add_case(
            subject,
            None if web_to_case else contacts[person.user_id],
            rng.choices(tuple(CASE_ORIGINS), tuple(CASE_ORIGINS.values()))[0],
            _case_status(rng, now - created),
            description,
            supplied_email=person.email if web_to_case else None,
            supplied_name=person.name if web_to_case else None,
            at=created,
            updated=_later(rng, created, now),
            priority=rng.choice(("Low", "Medium", "Medium", "High")),
        )
        made.cases.setdefault(person.user_id, []).append(case_id)
    made.contacts = len(contacts)


def _case_status(rng: random.Random, age: timedelta) -> str:
    """Return a case status: Closed mostly when three weeks old."""
    if age > timedelta(days=21) and rng.random() < 0.9:
        return "Closed"
    return rng.choice(("New", "Working", "Escalated", "Closed"))


def _add_contact(
    salesforce: FakeSalesforce,
    rng: random.Random,
    person: Person,
    reserved_phones: Collection[str] = (),
) -> str:
    """Add a customer as a Contact: same email, sometimes another phone or a mobile."""
    first, last = person.name.split()
    phone: str | None = person.phone
    mobile = None
    if rng.random() < 0.25:
        # The CRM knows another line: a work phone, the customer's own mobile beside.
        phone, mobile = _other_line(rng, reserved_phones), person.phone
    elif rng.random() < 0.1:
        phone = None
    return salesforce.add_contact(first, last, email=person.email, phone=phone, mobile=mobile)


def _other_line(rng: random.Random, reserved_phones: Collection[str]) -> str:
    """Draw a work number (anyone's, even another customer's), never a reserved one."""
    while True:
        phone = f"+1{rng.choice(AREA_CODES)}55501{rng.randint(0, 99):02d}"
        if phone not in reserved_phones:
            return phone


def _add_calls(
    twilio: FakeTwilio,
    rng: random.Random,
    people: Sequence[Person],
    count: int,
    days: int,
    now: datetime,
    made: _Made,
) -> None:
    """Log `count` inbound calls from the customers' numbers; answered ones dial an agent."""
    for _ in range(count):
        person = rng.choice(people)
        start = _when(rng, days, now)
        status = rng.choices(("completed", "no-answer", "busy"), (85, 10, 5))[0]
        duration = rng.randint(20, 900)
        sid = twilio.add_call(
            person.phone,
            SUPPORT_LINE,
            start=start,
            duration_s=duration,
            status=status,
            sid=_sid(rng),
        )
        made.calls.setdefault(person.user_id, []).append(sid)
        made.call_count += 1
        if status == "completed":
            agent = f"client:{rng.choice(AGENTS).split()[0].lower()}"
            twilio.add_call(
                person.phone,
                agent,
                start=start,
                duration_s=max(duration - 8, 1),
                direction="outbound-dial",
                parent_call_sid=sid,
                sid=_sid(rng),
            )
            made.call_count += 1


def _sid(rng: random.Random) -> str:
    """Return a call SID drawn from the seed, so that a history is the same every time."""
    return f"CA{rng.getrandbits(128):032x}"


def _samples(people: Sequence[Person], made: _Made, count: int = 5) -> tuple[SampleCustomer, ...]:
    """Pick the customers with the most tickets among those who also have cases."""
    both = [
        p for p in people if p.email and made.tickets.get(p.user_id) and made.cases.get(p.user_id)
    ]
    both.sort(key=lambda p: (-len(made.tickets[p.user_id]), p.user_id))
    return tuple(
        SampleCustomer(
            name=p.name,
            email=p.email or "",
            phone=p.phone,
            zendesk_user_id=p.user_id,
            ticket_ids=tuple(made.tickets[p.user_id]),
            case_ids=tuple(made.cases[p.user_id]),
            call_sids=tuple(made.calls.get(p.user_id, ())),
        )
        for p in both[:count]
    )


SERVE_DEFAULTS = {"zendesk": 8765, "salesforce": 8302, "twilio": 8303}
ZENDESK_EMAIL = "bot@example.com"
ZENDESK_TOKEN = "history-zendesk-token"
WEBHOOK_SECRET = "history-webhook-secret"
SF_SESSION = "00D000000000001!AQ.history.session"
TWILIO_TOKEN = "history-twilio-token"


def config_snippet(zendesk: FakeZendesk, salesforce: FakeSalesforce, twilio: FakeTwilio) -> str:
    """Return the config.yaml lines that point Carryover's integrations at the three fakes."""
    return f"""allow_private_upstreams: true   # the fakes listen on 127.0.0.1
integrations:
  zendesk:
    url: {zendesk.url}
    email: {zendesk.email}
    api_token: {zendesk.api_token}
    webhook_secret: {WEBHOOK_SECRET}
  salesforce:
    organization_id: {salesforce.org_id}
    instance_url: {salesforce.url}
    session_id: "{salesforce.session_id}"
    # or log in: username {salesforce.username}, password {salesforce.password},
    # security_token {salesforce.security_token}, login_url {salesforce.url}
  twilio:
    auth_token: {twilio.auth_token}
    account_sid: {twilio.account_sid}
    api_url: {twilio.api_url}
"""


def _options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.history",
        description="Serve fake Zendesk, Salesforce and Twilio APIs holding a made-up history.",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        required=True,
        help="start the three fakes, seeded, until Ctrl-C",
    )
    parser.add_argument("--host", default="127.0.0.1")
    for tool, port in SERVE_DEFAULTS.items():
        parser.add_argument(f"--{tool}-port", type=int, default=port)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--requesters", type=int, default=500)
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument(
        "--no-export-limit", action="store_true", help="lift Zendesk's 10 export requests a minute"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the three fakes seeded with a history, printing how to connect, until Ctrl-C."""
    options = _options(argv)
    account = f"AC{random.Random(f'account {options.seed}').getrandbits(128):032x}"
    limit = None if options.no_export_limit else 10
    zendesk = FakeZendesk(
        ZENDESK_EMAIL,
        ZENDESK_TOKEN,
        options.host,
        options.zendesk_port,
        export_limit_per_minute=limit,
    )
    salesforce = FakeSalesforce(
        session_id=SF_SESSION, host=options.host, port=options.salesforce_port
    )
    twilio = FakeTwilio(account, TWILIO_TOKEN, options.host, options.twilio_port)
    summary = seed_history(
        zendesk,
        salesforce,
        twilio,
        requesters=options.requesters,
        tickets=options.tickets,
        cases=options.cases,
        calls=options.calls,
        days=options.days,
        seed=options.seed,
    )
    fakes = (zendesk.start(), salesforce.start(), twilio.start())
    # Printed inside the try: a Ctrl-C right after the last line still stops cleanly.
    try:
        print(_announcement(summary, zendesk, salesforce, twilio), flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        for fake in fakes:
            fake.stop()


def _announcement(
    summary: HistorySummary, zendesk: FakeZendesk, salesforce: FakeSalesforce, twilio: FakeTwilio
) -> str:
    lines = [
        f"Zendesk    {zendesk.url}  user {zendesk.email}/token, token {zendesk.api_token}"
        f"  ({summary.requesters} requesters, {summary.agents} agents, {summary.tickets} tickets)",
        f"Salesforce {salesforce.url}  org {salesforce.org_id}, session {salesforce.session_id}"
        f"  ({summary.contacts} contacts, {summary.cases} cases)",
        f"Twilio     {twilio.url}  account {twilio.account_sid}, token {twilio.auth_token}"
        f"  ({summary.calls} calls)",
        "Agent views: the same URLs with / .",
        "Customers in both Zendesk and Salesforce: "
        + ", ".join(f"{c.name} <{c.email}>" for c in summary.in_both),
        "",
        "Paste into config.yaml:",
        "",
        config_snippet(zendesk, salesforce, twilio),
        "Ctrl-C stops the fakes.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
