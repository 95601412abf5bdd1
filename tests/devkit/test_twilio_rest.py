"""The fake Twilio REST API: the Calls list in Twilio's envelope, filters, paging and auth."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests

from devkit.simulators.twilio_rest import FakeTwilio

TOKEN = "twilio-rest-token-for-tests"
ANN = "+14155550142"
SUPPORT_LINE = "+14155550100"
CALL_SID = re.compile(r"^CA[0-9a-f]{32}$")
TWILIO_TIME = re.compile(r"^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000$")
MORNING = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    """Serve a fake Twilio account with one call a day for the 120 days before MORNING."""
    with FakeTwilio(auth_token=TOKEN) as fake:
        for day in range(120):
            fake.add_call(ANN, SUPPORT_LINE, start=MORNING - timedelta(days=day), duration_s=95)
        yield fake


def calls(fake: FakeTwilio, uri: str | None = None, **params: Any) -> requests.Response:
    """GET the account's Calls list, or a page URI it handed out."""
    path = uri or f"/2010-04-01/Accounts/{fake.account_sid}/Calls.json"
    auth = (fake.account_sid, TOKEN)
    return requests.get(fake.url + path, params=params, auth=auth, timeout=5)


def test_a_call_is_the_full_call_resource(twilio: FakeTwilio) -> None:
    """Each call carries Twilio's fields: SIDs, RFC 2822 times, duration as a string."""
    call = calls(twilio, PageSize=1).json()["calls"][0]
    sid = call["sid"]
    assert CALL_SID.match(sid)
    assert call["account_sid"] == twilio.account_sid
    assert call["from"] == ANN and call["from_formatted"] == "(415) 555-0142"
    assert call["to"] == SUPPORT_LINE and call["direction"] == "inbound"
    assert call["status"] == "completed" and call["duration"] == "95"
    assert call["start_time"] == "Fri, 04 Dec 2026 10:00:00 +0000"
    assert call["end_time"] == "Fri, 04 Dec 2026 10:01:35 +0000"
    assert all(TWILIO_TIME.match(call[f]) for f in ("date_created", "date_updated"))
    assert call["parent_call_sid"] is None
    assert call["price"] == "-0.01700" and call["price_unit"] == "USD"
    assert call["api_version"] == "2010-04-01"
    assert call["uri"] == f"/2010-04-01/Accounts/{twilio.account_sid}/Calls/{sid}.json"
    assert call["subresource_uris"]["recordings"].endswith(f"/Calls/{sid}/Recordings.json")


def test_the_list_envelope_pages_newest_first_to_the_end(twilio: FakeTwilio) -> None:
    """Following next_page_uri reads every call once, newest first, with null at the end."""
    first = calls(twilio).json()
    assert (first["page"], first["page_size"], first["start"], first["end"]) == (0, 50, 0, 49)
    base = f"/2010-04-01/Accounts/{twilio.account_sid}/Calls.json"
    assert first["first_page_uri"] == f"{base}?PageSize=50&Page=0"
    assert first["uri"] == f"{base}?PageSize=50&Page=0"
    assert first["previous_page_uri"] is None
    assert first["next_page_uri"] == (
        f"{base}?PageSize=50&Page=1&PageToken=PA{first['calls'][-1]['sid']}"
    )
    pages = [first]
    while pages[-1]["next_page_uri"]:
        pages.append(calls(twilio, pages[-1]["next_page_uri"]).json())
    assert [len(page["calls"]) for page in pages] == [50, 50, 20]
    assert [(p["start"], p["end"]) for p in pages] == [(0, 49), (50, 99), (100, 119)]
    starts = [parsedate_to_datetime(c["start_time"]) for p in pages for c in p["calls"]]
    assert starts == sorted(starts, reverse=True) and len(set(starts)) == 120
    back = calls(twilio, pages[2]["previous_page_uri"]).json()
    assert back["calls"] == pages[1]["calls"]


def test_page_without_token_is_an_offset(twilio: FakeTwilio) -> None:
    """Page=N with PageSize reads the Nth slice, as the Page index does."""
    by_token = calls(twilio, calls(twilio, PageSize=30).json()["next_page_uri"]).json()
    by_index = calls(twilio, PageSize=30, Page=1).json()
    assert by_index["calls"] == by_token["calls"]


def test_page_size_is_at_most_1000(twilio: FakeTwilio) -> None:
    """A PageSize above Twilio's maximum is taken as 1000."""
    page = calls(twilio, PageSize=5000).json()
    assert page["page_size"] == 1000 and len(page["calls"]) == 120
    assert page["next_page_uri"] is None


@pytest.mark.parametrize("name", ["StartTime>", "StartTime>="])
def test_start_time_from_a_day_on(twilio: FakeTwilio, name: str) -> None:
    """StartTime>=YYYY-MM-DD keeps calls started on or after that day (UTC), in the URIs too."""
    since = (MORNING - timedelta(days=9)).date().isoformat()
    page = calls(twilio, **{name: since}).json()
    assert len(page["calls"]) == 10
    assert all(parsedate_to_datetime(c["start_time"]).date().isoformat() >= since
               for c in page["calls"])  # fmt: skip
    assert f"StartTime%3E{'%3D' if name.endswith('=') else ''}={since}&" in page["uri"]


def test_start_time_url_form_as_clients_send_it(twilio: FakeTwilio) -> None:
    """The literal query StartTime>=2026-11-25 selects the ten days up to MORNING."""
    url = f"{twilio.url}/2010-04-01/Accounts/{twilio.account_sid}/Calls.json?StartTime>=2026-11-25"
    page = requests.get(url, auth=(twilio.account_sid, TOKEN), timeout=5).json()
    assert len(page["calls"]) == 10
    assert page["first_page_uri"].endswith("Calls.json?StartTime%3E=2026-11-25&PageSize=50&Page=0")


def test_other_filters_and_legs(twilio: FakeTwilio) -> None:
    """From, Status and ParentCallSid filter; a dialled leg names its parent call."""
    parent = twilio.add_call("+12125550123", SUPPORT_LINE, start=MORNING + timedelta(hours=1))
    leg = twilio.add_call(
        "+12125550123", "client:emma", start=MORNING + timedelta(hours=1),
        direction="outbound-dial", parent_call_sid=parent,
    )  # fmt: skip
    missed = twilio.add_call(ANN, SUPPORT_LINE, start=MORNING + timedelta(hours=2),
                             status="no-answer")  # fmt: skip
    assert [c["sid"] for c in calls(twilio, ParentCallSid=parent).json()["calls"]] == [leg]
    assert [c["sid"] for c in calls(twilio, Status="no-answer").json()["calls"]] == [missed]
    from_bo = calls(twilio, From="+12125550123").json()["calls"]
    assert {c["sid"] for c in from_bo} == {parent, leg}
    no_answer = twilio.calls[missed]
    assert no_answer["duration"] == "0" and no_answer["price"] is None


def test_a_bad_start_time_is_a_400(twilio: FakeTwilio) -> None:
    """An unreadable StartTime is refused with Twilio's error body."""
    response = calls(twilio, **{"StartTime>": "yesterday"})
    assert response.status_code == 400
    assert response.json()["code"] == 20001


@pytest.mark.parametrize("who", ["token", "account", "path", "none"])
def test_wrong_credentials_are_401_20003(twilio: FakeTwilio, who: str) -> None:
    """A wrong token or account, or none, is a 401 with Twilio's 20003 body."""
    sid, token, path_sid = twilio.account_sid, TOKEN, twilio.account_sid
    if who == "token":
        token = "wrong"
    elif who == "account":
        sid = "AC" + "0" * 32
    elif who == "path":
        path_sid = "AC" + "1" * 32
    url = f"{twilio.url}/2010-04-01/Accounts/{path_sid}/Calls.json"
    auth = None if who == "none" else (sid, token)
    response = requests.get(url, auth=auth, timeout=5)
    assert response.status_code == 401
    assert response.json() == {
        "code": 20003,
        "detail": "Your AccountSid or AuthToken was incorrect.",
        "message": "Authentication Error - invalid username",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }


def test_add_call_refuses_unknown_directions(twilio: FakeTwilio) -> None:
    """Only Twilio's directions and statuses are accepted."""
    with pytest.raises(ValueError, match="not a direction"):
        twilio.add_call(ANN, SUPPORT_LINE, direction="outbound")
    with pytest.raises(ValueError, match="not a call status"):
        twilio.add_call(ANN, SUPPORT_LINE, status="done")


def test_the_agent_view_lists_the_calls(twilio: FakeTwilio) -> None:
    """The read-only page shows the call log."""
    page = requests.get(twilio.url + "/", timeout=5).text
    assert page.count("(415) 555-0142 → (415) 555-0100") == 120
