"""The Zendesk simulator's incremental ticket export, in Zendesk's cursor format and limits."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from devkit.simulators.zendesk import EXPORT_PATH, FakeZendesk
from tests.values import ANN, ZENDESK_EMAIL, ZENDESK_TOKEN

AUTH = (f"{ZENDESK_EMAIL}/token", ZENDESK_TOKEN)
AGENT = 7000001
LAST_WEEK = datetime.now(UTC).replace(microsecond=0) - timedelta(days=7)


@pytest.fixture
def zendesk(fake_zendesk: FakeZendesk) -> FakeZendesk:
    """Return the fake Zendesk with 25 tickets of last week and the minute's lag lifted."""
    fake_zendesk.export_lag_seconds = 0
    fake_zendesk.set_export_limit(None)
    fake_zendesk.add_agent(AGENT, "Lee Agent", email="lee@example.com")
    for number in range(25):
        at = LAST_WEEK + timedelta(hours=number)
        assignee = AGENT if number % 2 else None
        fake_zendesk.add_ticket(100 + number, ANN, f"old {number}", at=at, assignee_id=assignee)
    return fake_zendesk


def export(fake: FakeZendesk, **params: Any) -> requests.Response:
    """GET the cursor-based incremental ticket export with these parameters."""
    return requests.get(fake.url + EXPORT_PATH, params=params, auth=AUTH, timeout=5)


def every_page(fake: FakeZendesk, **params: Any) -> list[dict[str, Any]]:
    """Follow after_url from a first request until end_of_stream, returning every page."""
    pages = [export(fake, **params).json()]
    while not pages[-1]["end_of_stream"]:
        pages.append(requests.get(pages[-1]["after_url"], auth=AUTH, timeout=5).json())
    return pages


def test_pages_run_in_updated_order_to_the_end_of_the_stream(zendesk: FakeZendesk) -> None:
    """Following after_url yields every ticket once, by updated_at then id, ending the stream."""
    start = int((LAST_WEEK - timedelta(days=1)).timestamp())
    pages = every_page(zendesk, start_time=start, per_page=10)
    assert [len(page["tickets"]) for page in pages] == [10, 10, 9]
    assert [page["end_of_stream"] for page in pages] == [False, False, True]
    tickets = [ticket for page in pages for ticket in page["tickets"]]
    assert [t["id"] for t in tickets] == [*range(100, 125), 5141, 5149, 5158, 5160]
    stamps = [(t["generated_timestamp"], t["id"]) for t in tickets]
    assert stamps == sorted(stamps)
    first = tickets[0]
    assert first == zendesk.tickets[100] | {"generated_timestamp": int(LAST_WEEK.timestamp())}
    assert pages[0]["before_url"] is None and pages[0]["before_cursor"] is None
    cursor = pages[0]["after_cursor"]
    assert pages[0]["after_url"] == f"{zendesk.url}{EXPORT_PATH}?cursor={cursor}&per_page=10"


def test_the_cursor_reads_like_zendesks_time_and_last_ticket(zendesk: FakeZendesk) -> None:
    """An after_cursor decodes to the page's last generated_timestamp and ticket id."""
    page = export(zendesk, start_time=int(LAST_WEEK.timestamp()), per_page=1).json()
    cursor = page["after_cursor"]
    decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    assert decoded == f"{int(LAST_WEEK.timestamp())}.0||100|"


def test_start_time_includes_tickets_updated_at_that_second(zendesk: FakeZendesk) -> None:
    """start_time takes tickets whose generated_timestamp is at or after it."""
    start = int((LAST_WEEK + timedelta(hours=20)).timestamp())
    page = export(zendesk, start_time=start).json()
    assert [t["id"] for t in page["tickets"]][:5] == [120, 121, 122, 123, 124]
    assert page["end_of_stream"] is True


def test_the_last_cursor_later_returns_what_changed_since(zendesk: FakeZendesk) -> None:
    """The end-of-stream cursor, used again, returns only tickets updated after it."""
    last = every_page(zendesk, start_time=0)[-1]
    assert export(zendesk, cursor=last["after_cursor"]).json()["tickets"] == []
    zendesk.add_ticket(200, ANN, "new one", at=datetime.now(UTC) + timedelta(seconds=2))
    zendesk.tickets[101]["updated_at"] = zendesk.tickets[200]["updated_at"]
    time.sleep(2.1)
    again = export(zendesk, cursor=last["after_cursor"]).json()
    assert [t["id"] for t in again["tickets"]] == [101, 200]
    assert again["end_of_stream"] is True


def test_the_last_minute_is_left_out_and_a_recent_start_time_refused() -> None:
    """As Zendesk: changes of the last minute wait, a start_time under a minute old is 422."""
    with FakeZendesk(ZENDESK_EMAIL, ZENDESK_TOKEN) as fake:
        fake.add_user(ANN, "Ann Example", email="ann.example@example.com")
        fake.add_ticket(1, ANN, "old", at=LAST_WEEK)
        fake.add_ticket(2, ANN, "just now")
        page = export(fake, start_time=0).json()
        assert [t["id"] for t in page["tickets"]] == [1]
        refused = export(fake, start_time=int(time.time()) - 10)
        assert refused.status_code == 422
        assert refused.json() == {
            "error": "InvalidValue",
            "description": "Too recent start_time. Use a start_time older than 1 minute",
        }
        assert export(fake, start_time=int(time.time()) + 3600).status_code == 422


@pytest.mark.parametrize(
    "params",
    [{}, {"start_time": 0, "cursor": "MTU4MDc1Mzc5OC4wfHw0MzJ8"}],
    ids=["neither", "both"],
)
def test_start_time_xor_cursor(zendesk: FakeZendesk, params: dict[str, Any]) -> None:
    """Neither or both of start_time and cursor is a 400."""
    response = export(zendesk, **params)
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidPaginationParameter"


@pytest.mark.parametrize("cursor", ["not-a-cursor!", "aGVsbG8", ""])
def test_a_bad_cursor_is_a_400(zendesk: FakeZendesk, cursor: str) -> None:
    """A cursor the fake did not hand out is refused with Zendesk's error body."""
    response = export(zendesk, cursor=cursor)
    assert response.status_code == 400
    assert response.json() == {
        "error": "InvalidPaginationParameter",
        "description": "cursor is invalid",
    }


def test_include_users_side_loads_every_user_a_page_names(zendesk: FakeZendesk) -> None:
    """include=users adds the requesters, submitters and assignees of the page's tickets."""
    page = export(zendesk, start_time=0, per_page=3, include="users").json()
    assert [user["id"] for user in page["users"]] == [ANN, AGENT]
    assert page["users"][1]["role"] == "agent"
    assert page["after_url"].endswith("&per_page=3&include=users")
    assert "users" not in export(zendesk, start_time=0).json()


def test_per_page_is_at_most_1000(zendesk: FakeZendesk) -> None:
    """A per_page above Zendesk's maximum is taken as 1000."""
    for number in range(1100):
        zendesk.add_ticket(1000 + number, ANN, "bulk", at=LAST_WEEK)
    page = export(zendesk, start_time=0, per_page=5000).json()
    assert len(page["tickets"]) == 1000
    assert page["end_of_stream"] is False


def test_the_export_is_limited_to_10_requests_a_minute() -> None:
    """The 11th export request in a minute is a 429 with Retry-After and Zendesk's body."""
    with FakeZendesk(ZENDESK_EMAIL, ZENDESK_TOKEN) as fake:
        statuses = [export(fake, start_time=0).status_code for _ in range(10)]
        refused = export(fake, start_time=0)
        assert statuses == [200] * 10
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.json() == {
            "error": "APIRateLimitExceeded",
            "description": "Number of allowed incremental export API requests per minute exceeded",
        }
        # Other endpoints keep their own, higher limit.
        me = requests.get(fake.url + "/api/v2/users/me.json", auth=AUTH, timeout=5)
        assert me.status_code == 200
        fake.set_export_limit(None)
        assert export(fake, start_time=0).status_code == 200


def test_the_limit_is_set_by_the_constructor() -> None:
    """export_limit_per_minute sets the limit (30 as on High Volume plans)."""
    with FakeZendesk(ZENDESK_EMAIL, ZENDESK_TOKEN, export_limit_per_minute=2) as fake:
        statuses = [export(fake, start_time=0).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]


def test_the_export_needs_basic_auth(zendesk: FakeZendesk) -> None:
    """A wrong token is a 401 with Zendesk's body, as on the other endpoints."""
    response = requests.get(
        zendesk.url + EXPORT_PATH,
        params={"start_time": 0},
        auth=(f"{ZENDESK_EMAIL}/token", "wrong"),
        timeout=5,
    )
    assert response.status_code == 401
    assert response.json() == {"error": "Couldn't authenticate you"}


def test_show_many_takes_up_to_100_ids(zendesk: FakeZendesk) -> None:
    """users/show_many.json answers 100 ids and refuses 101."""
    url = zendesk.url + "/api/v2/users/show_many.json"
    ids = ",".join(str(ANN + n) for n in range(100))
    found = requests.get(url, params={"ids": ids, "include": "identities"}, auth=AUTH, timeout=5)
    assert found.status_code == 200
    assert [user["id"] for user in found.json()["users"]] == [ANN]
    refused = requests.get(url, params={"ids": ids + ",1"}, auth=AUTH, timeout=5)
    assert refused.status_code == 400
    assert refused.json()["error"] == "InvalidValue"
