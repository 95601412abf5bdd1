"""The demo: four journeys through simulated tools, each leaving the notes it promises."""

from __future__ import annotations

import html
import re
import signal
import socket
import subprocess
import sys

import pytest
import requests

from devkit.demo import (
    ANN,
    BOB,
    CHAT_LINES,
    DANA_PHONE,
    HANDOFF_NOTE,
    PAST_TICKETS,
    VOICEMAIL,
    billing_transfers,
    bought_chatted_called,
    facebook_then_phone,
    monday_call_wednesday_email,
    running_demo,
)
from middleware.cli import main
from middleware.notes.outbox import MARKER_PATTERN
from middleware.reads.context_api import signed_path


def free_port() -> int:
    """Return a port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One demo for the module, at full speed, its story kept for the assertions."""
    told: list[str] = []
    folder = tmp_path_factory.mktemp("demo") / "var"
    with running_demo(folder, free_port(), pace=0, say=told.append) as running:
        running.told = told
        yield running


STAMP = re.compile(r"[A-Z][a-z]{2} \d{1,2} [A-Z][a-z]{2}( \d{4})? \d\d:\d\d")


def unmarked(text: str) -> str:
    """Return a note without its marker line, its times (taken as the demo runs) as <when>."""
    return STAMP.sub("<when>", MARKER_PATTERN.sub("", text)).strip()


def test_a_facebook_message_continued_by_phone(demo):
    """The call's pop shows the Facebook ticket, and the ticket gets a note of the call."""
    ticket = facebook_then_phone(demo)
    pop = requests.get(demo.pop_link(ANN.phone), timeout=5).text
    assert "Ann Example" in pop and "Blender arrived with a cracked jug" in pop
    (note,) = demo.zendesk.notes(ticket)
    assert not note["public"]
    assert unmarked(note["body"]) == (
        "Phone call <when>, 3 min 4 s, answered by sam\nCaller: Ann Example, +14155550142"
    )


def test_a_billing_error_from_support_to_billing_to_a_manager(demo):
    """The case starts with the ticket's story; the transferred call is noted on both."""
    ticket, case = billing_transfers(demo)
    summary, call_note = (c["CommentBody"] for c in demo.salesforce.comments(case))
    assert unmarked(summary).splitlines()[:4] == [
        "Bob Sample — 1 contact in 30 days: email",
        "Open:",
        f"- #{ticket} · new · Charged twice for invoice INV-1042 · "
        f"{demo.zendesk.url}/agent/tickets/{ticket}",
        '  "Hello, my card was charged $49 twice for invoice INV-1042. Please refund one charge."',
    ]  # what Bob already said, under the ticket he said it in
    call = (
        "Phone call <when>, 7 min 0 s, answered by mia → lee (transferred)\n"
        "Caller: Bob Sample, +14155550177\n"
        "- <when>: Transferred from mia to lee\n"
        "Handoff notes:\n"
        f"- mia, <when>: {HANDOFF_NOTE}"
    )
    assert unmarked(call_note) == call
    # Support's ticket learns of billing's case as it is opened, then of the call.
    update, ticket_note = demo.zendesk.notes(ticket)
    number = demo.salesforce.case(case)["CaseNumber"]
    assert unmarked(update["body"]) == (
        f'New Salesforce case {number} for Bob Sample, <when>: "Double charge on INV-1042"\n'
        f"{demo.salesforce.url}/lightning/r/Case/{case}/view"
    )
    assert unmarked(ticket_note["body"]) == call
    assert HANDOFF_NOTE in ticket_note["body"]  # mia's note, in the call note on the ticket
    pop = requests.get(demo.pop_link(BOB.phone), timeout=5).text
    assert "Bob Sample" in pop and "Double charge on INV-1042" in pop
    assert "Handoff note from mia" in pop and "needs manager sign-off" in pop
    # Billing opened the case by phone: its description is billing's words, not Bob's.
    path = signed_path(demo.link_secret, "/api/v1/context", {"phone": BOB.phone}, 3600)
    said = [s["text"] for s in requests.get(demo.url + path, timeout=5).json()["said"]]
    assert said and all("Refund one of the two" not in text for text in said)
    assert said[-1].startswith("Hello, my card was charged $49 twice")


def test_a_call_on_monday_and_an_email_on_wednesday(demo):
    """The email's ticket names Monday's call, found through the number on her profile."""
    ticket = monday_call_wednesday_email(demo)
    (note,) = demo.zendesk.notes(ticket)
    assert unmarked(note["body"]) == (
        "Carla Rossi — 1 contact in 30 days: phone\n"
        "Latest contacts:\n"
        "- <when> (2 days ago) · phone call, inbound, 4 min 20 s, answered by sam\n"
        "Recognised by email and phone"
    )  # Monday's call by its time, never its CallSid


def test_bought_online_chatted_with_the_bot_then_called(demo):
    """The second call's pop shows the order and refund, the chat, the voicemail, the wish."""
    call = bought_chatted_called(demo)
    pop = requests.get(demo.pop_link(DANA_PHONE), timeout=5).text
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", pop)))  # as read
    order = "https://acme-demo.myshopify.com/admin/orders/450789469"
    assert f'<a href="{order}" target="_blank" rel="noopener">#1001</a>: refund of 39.00 USD' in pop
    assert "Glass kettle · 39.00 USD" in text
    assert f"{CHAT_LINES[0]} {CHAT_LINES[1]}" in text  # her lines, joined
    assert "How can I help" not in text  # never the bot's
    assert VOICEMAIL in text
    assert "Prefers phone (said in a survey)" in text
    recording = re.search(r'<a href="([^"]+)"[^>]*>recording</a>', pop)
    assert recording and recording.group(1).startswith("https://console.twilio.com/")
    assert call.status == "completed"


def test_the_story_is_told_and_the_integrations_were_connected_as_in_the_browser(demo):
    """The watcher reads what happens; the admin UI shows the tools connected from it."""
    story = "\n".join(demo.told)
    headings = ("1. A Facebook message", "2. A billing error", "3. A call on Monday",
                "4. Bought online, a chat with the shop's bot, then a call")  # fmt: skip
    for heading in headings:
        assert heading in story
    assert "     │ Phone call " in story  # the notes themselves, as the agent reads them
    assert "     │ Recognised by email and phone" in story
    assert f"     │ {HANDOFF_NOTE}" in story  # the handoff note mia typed in the pop
    assert "[Carryover ref" not in story
    page = admin_session(demo).get(f"{demo.url}/admin/integrations/", timeout=5).text
    text = re.sub(r"<[^>]+>", "", page)  # as the admin reads it
    assert text.count("connected (admin UI)") == 5


def admin_session(demo) -> requests.Session:
    """Return a browser session of the demo's admin, logged in."""
    session = requests.Session()
    login = session.get(f"{demo.url}/admin/login", timeout=5).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)
    form = {"username": "demo", "password": demo.secrets.admin_password, "csrf_token": token}
    assert session.post(f"{demo.url}/admin/login", data=form, timeout=5).ok
    return session


def test_carryover_demo_plays_every_journey_and_exits(tmp_path, capsys):
    """`carryover demo --exit` tells the journeys, then where to look, and exits 0."""
    folder = tmp_path / "demo"
    argv = ["demo", "--pace", "0", "--exit", "--port", str(free_port()), "--folder", str(folder)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Wednesday: she emails" in out and "password" in out
    assert "The demo stops now (--exit)." in out and "Ctrl-C stops the demo" not in out
    assert (folder / "carryover.db").exists() and (folder / "carryover.log").exists()
    assert main(argv) == 0, "the folder of an earlier demo is emptied and used again"


def test_the_demo_never_empties_a_folder_that_is_not_a_demos(tmp_path, capsys):
    """`--folder var` must not delete the real store and its key: refused, left as it was."""
    real = tmp_path / "var"
    real.mkdir()
    (real / "carryover.db").write_bytes(b"the real store")
    argv = ["demo", "--pace", "0", "--exit", "--port", str(free_port()), "--folder", str(real)]
    assert main(argv) == 1
    assert "is not a demo's folder" in capsys.readouterr().err
    assert (real / "carryover.db").read_bytes() == b"the real store"


def test_the_demo_refuses_a_port_in_use_instead_of_playing_against_it(tmp_path, capsys):
    """Something already listens on the port: said in one line, exit 1, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["demo", "--pace", "0", "--exit", "--port", str(port),
                "--folder", str(tmp_path / "demo")]  # fmt: skip
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"port {port} is in use" in err and "Traceback" not in err


def test_sigterm_stops_the_demo_and_the_carryover_it_started(tmp_path):
    """Killed with SIGTERM (as a service manager stops it), the demo takes its `carryover
    serve` down with it instead of leaving it serving."""
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "middleware.cli", "demo", "--pace", "0", "--port", str(port),
         "--folder", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        for line in demo.stdout or ():  # the journeys have been played: it stays up
            if "Ctrl-C stops the demo" in line:
                break
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)


@pytest.fixture(scope="module")
def history_demo(tmp_path_factory):
    """One demo whose tools first hold a year of history, imported before the journeys."""
    told: list[str] = []
    folder = tmp_path_factory.mktemp("history") / "var"
    with running_demo(folder, free_port(), pace=0, say=told.append, history=True) as running:
        running.told = told
        yield running


def old_ticket(demo, subject: str) -> int:
    """Return the id of the demo person's past ticket of that subject."""
    (found,) = (t["id"] for t in demo.zendesk.tickets.values() if t["subject"] == subject)
    return found


def test_the_history_demo_says_what_it_imported(history_demo):
    """The seeded tickets and cases, and the demo people's past, are all imported."""
    story = "\n".join(history_demo.told)
    tickets = history_demo.history.tickets + len(PAST_TICKETS)
    cases = history_demo.history.cases + 1  # Bob's card, three months ago
    assert f"Imported, with no note written anywhere: {cases} cases from Salesforce" in story
    assert f", {tickets} tickets from Zendesk." in story
    page = admin_session(history_demo).get(f"{history_demo.url}/admin/integrations/zendesk",
                                           timeout=5).text  # fmt: skip
    assert f"{tickets:,} imported · 0 already imported" in html.unescape(page)


def test_an_imported_ticket_is_named_on_a_new_one_and_in_the_pop(history_demo):
    """Ann's Facebook ticket is noted with her imported chat and call; the pop shows them."""
    demo = history_demo
    ticket = facebook_then_phone(demo)
    old = old_ticket(demo, "When does order 4411 ship?")
    past, call = demo.zendesk.notes(ticket)
    assert unmarked(past["body"]) == (
        "Ann Example — 2 contacts in 30 days: phone, chat\n"
        "Latest contacts:\n"
        "- <when> (3 weeks ago) · phone call, inbound, 1 min 35 s\n"
        f"- <when> (3 weeks ago) · #{old} · chat · When does order 4411 ship? · "
        f"{demo.zendesk.url}/agent/tickets/{old}\n"
        '"Hi, I ordered a blender (order 4411) last week. When will it ship?"\n'
        "Recognised by email, phone and facebook"
    )  # her chat and call, imported: the Facebook message is no first contact
    assert unmarked(call["body"]) == (
        "Phone call <when>, 3 min 4 s, answered by sam\nCaller: Ann Example, +14155550142"
    )
    pop = requests.get(demo.pop_link(ANN.phone), timeout=5).text
    assert "When does order 4411 ship?" in pop and "Blender arrived with a cracked jug" in pop


def test_a_kettle_ticket_of_july_is_named_with_mondays_call(history_demo):
    """Carla's email is noted with Monday's call and her imported ticket about the kettle."""
    demo = history_demo
    ticket = monday_call_wednesday_email(demo)
    old = old_ticket(demo, "Kettle stopped heating")
    (note,) = demo.zendesk.notes(ticket)
    assert unmarked(note["body"]).splitlines()[2:5] == [
        "- <when> (2 days ago) · phone call, inbound, 4 min 20 s, answered by sam",
        f"- <when> (5 months ago) · #{old} · email · Kettle stopped heating · "
        f"{demo.zendesk.url}/agent/tickets/{old}",
        '"My kettle stopped heating after two months. Can I send it back?"',
    ]
    assert "the kettle's earlier, imported ticket" in "\n".join(demo.told)


def test_carryover_demo_history_shows_the_import_on_the_terminal(tmp_path, capfd):
    """`carryover demo --history` runs the backfill with its progress, then the journeys."""
    argv = ["demo", "--history", "--pace", "0", "--exit", "--port", str(free_port()),
            "--folder", str(tmp_path / "demo")]  # fmt: skip
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert "carryover backfill --since 365d --config " in out
    for tool in ("Salesforce", "Twilio", "Zendesk"):
        assert re.search(rf"^{tool} +\[█{{24}}\] 100%  [\d,]+ records", err, re.M), tool
    # 600 made-up tickets and 100 cases, with Ann's, Bob's and Carla's past beside them.
    assert re.search(r"^Zendesk: done .*: 603 imported, 0 already imported", out, re.M)
    assert "Imported, with no note written anywhere: 101 cases from Salesforce" in out
    assert out.index("Imported, with no") < out.index("1. A Facebook message")
    assert "     │ - " in out and " · chat · When does order 4411 ship? · " in out
