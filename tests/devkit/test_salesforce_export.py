"""The Salesforce simulator's history query: relationship fields, COUNT(), paging and limits."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from devkit.simulators.salesforce import API_VERSION, FakeSalesforce

SESSION = "00D000000000001!AQ.fixed.session.for.export.tests"
SINCE = datetime(2025, 12, 6, tzinfo=UTC)
IMPORT_QUERY = (
    "SELECT Id, CaseNumber, Subject, Description, Status, IsClosed, Origin, Priority, CreatedDate,"
    " LastModifiedDate, ContactId, SuppliedName, SuppliedEmail, SuppliedPhone, Contact.Name,"
    " Contact.Email, Contact.Phone, Contact.MobilePhone FROM Case"
    " WHERE LastModifiedDate >= 2025-12-06T00:00:00Z ORDER BY LastModifiedDate, Id"
)
LOCATOR_URL = re.compile(
    rf"^/services/data/v{re.escape(API_VERSION)}/query/01g[0-9A-Za-z]{{15}}-\d+$"
)


@pytest.fixture
def fake() -> Iterator[FakeSalesforce]:
    """Serve a fake org that knows the fixed session."""
    with FakeSalesforce(session_id=SESSION) as running:
        yield running


def get(fake: FakeSalesforce, path: str, **options: Any) -> requests.Response:
    """GET a REST path of the fake org on the fixed session."""
    headers = {"Authorization": f"Bearer {SESSION}"} | options.pop("headers", {})
    return requests.get(fake.url + path, headers=headers, timeout=5, **options)


def query(fake: FakeSalesforce, soql: str, **options: Any) -> requests.Response:
    """Run a SOQL query through the REST query resource."""
    return get(fake, f"/services/data/v{API_VERSION}/query/", params={"q": soql}, **options)


def add_cases(fake: FakeSalesforce, count: int, start: datetime) -> list[str]:
    """Add `count` cases a minute apart from `start`, without a contact."""
    return [
        fake.add_case(
            f"case {n}", supplied_email=f"c{n}@example.com", at=start + timedelta(minutes=n)
        )
        for n in range(count)
    ]


def test_the_import_query_nests_the_contact_or_gives_null(fake: FakeSalesforce) -> None:
    """Contact.* fields come as one nested record with attributes, or null without a contact."""
    ann = fake.add_contact("Ann", "Lee", email="ann.lee@example.com", phone="(415) 555-0142")
    with_contact = fake.add_case("Refund", ann, origin="Phone", at=SINCE + timedelta(hours=2))
    without = fake.add_case(
        "Charged twice",
        supplied_email="bo@example.org",
        supplied_name="Bo Diaz",
        status="Closed",
        priority="High",
        at=SINCE + timedelta(hours=1),
    )
    fake.add_case("Too old", ann, at=SINCE - timedelta(seconds=1))
    answer = query(fake, IMPORT_QUERY).json()
    assert answer["totalSize"] == 2 and answer["done"] is True
    assert "nextRecordsUrl" not in answer
    first, second = answer["records"]
    assert first["Id"] == without and second["Id"] == with_contact
    assert first["Contact"] is None
    assert first["SuppliedName"] == "Bo Diaz" and first["Priority"] == "High"
    assert first["IsClosed"] is True
    assert second["Contact"] == {
        "attributes": {
            "type": "Contact",
            "url": f"/services/data/v{API_VERSION}/sobjects/Contact/{ann}",
        },
        "Name": "Ann Lee",
        "Email": "ann.lee@example.com",
        "Phone": "(415) 555-0142",
        "MobilePhone": None,
    }
    assert list(second)[:3] == ["attributes", "Id", "CaseNumber"]
    assert second["attributes"]["type"] == "Case"


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (">= 2025-12-06T00:00:00Z", [1, 2]),
        ("> 2025-12-06T00:00:00Z", [2]),
        ("< 2025-12-06T00:00:00Z", [0]),
        ("<= 2025-12-06T01:00:00+01:00", [0, 1]),
        ("= 2025-12-06T00:00:00.000Z", [1]),
    ],
)
def test_datetime_literals_compare(
    fake: FakeSalesforce, condition: str, expected: list[int]
) -> None:
    """>=, >, <, <= and = take dateTime literals in UTC or with an offset."""
    ids = [
        fake.add_case(f"case {n}", at=SINCE + timedelta(minutes=m))
        for n, m in enumerate((-1, 0, 1))
    ]
    soql = f"SELECT Id FROM Case WHERE CreatedDate {condition} ORDER BY CreatedDate"
    records = query(fake, soql).json()["records"]
    assert [r["Id"] for r in records] == [ids[n] for n in expected]


def test_order_by_two_fields_breaks_ties_by_id(fake: FakeSalesforce) -> None:
    """ORDER BY LastModifiedDate, Id orders cases of the same moment by id."""
    same = [fake.add_case(f"same {n}", at=SINCE) for n in range(3)]
    earlier = fake.add_case("earlier", at=SINCE - timedelta(days=1))
    soql = "SELECT Id FROM Case ORDER BY LastModifiedDate, Id"
    assert [r["Id"] for r in query(fake, soql).json()["records"]] == [earlier, *sorted(same)]


def test_count_answers_the_total_without_records(fake: FakeSalesforce) -> None:
    """SELECT COUNT() answers totalSize with no records, whatever the batch size."""
    add_cases(fake, 2500, SINCE)
    add_cases(fake, 5, SINCE - timedelta(days=30))
    soql = "SELECT COUNT() FROM Case WHERE LastModifiedDate >= 2025-12-06T00:00:00Z"
    assert query(fake, soql).json() == {"totalSize": 2500, "done": True, "records": []}


def test_query_more_pages_in_batches_of_2000(fake: FakeSalesforce) -> None:
    """Over 2,000 records: done false, a nextRecordsUrl, and queryMore brings the rest."""
    ids = add_cases(fake, 2300, SINCE)
    first = query(fake, IMPORT_QUERY).json()
    assert (first["totalSize"], first["done"], len(first["records"])) == (2300, False, 2000)
    assert LOCATOR_URL.match(first["nextRecordsUrl"])
    assert first["nextRecordsUrl"].endswith("-2000")
    rest = get(fake, first["nextRecordsUrl"]).json()
    assert (rest["totalSize"], rest["done"], len(rest["records"])) == (2300, True, 300)
    assert "nextRecordsUrl" not in rest
    assert [r["Id"] for r in first["records"] + rest["records"]] == ids


def test_the_query_options_header_sets_the_batch_size(fake: FakeSalesforce) -> None:
    """Sforce-Query-Options: batchSize=N pages by N, held within 200 to 2,000."""
    add_cases(fake, 450, SINCE)
    headers = {"Sforce-Query-Options": "batchSize=200"}
    pages = [query(fake, IMPORT_QUERY, headers=headers).json()]
    while not pages[-1]["done"]:
        pages.append(get(fake, pages[-1]["nextRecordsUrl"]).json())
    assert [len(page["records"]) for page in pages] == [200, 200, 50]
    tiny = query(fake, IMPORT_QUERY, headers={"Sforce-Query-Options": "batchSize=5"}).json()
    assert len(tiny["records"]) == 200


@pytest.mark.parametrize(
    "locator", ["01gNOTAREALLOCATOR-2000", "nonsense", "{known}-x", "{known}-999999"]
)
def test_an_unknown_locator_is_invalid_query_locator(fake: FakeSalesforce, locator: str) -> None:
    """A locator the org never gave, or a bad offset, is a 400 INVALID_QUERY_LOCATOR."""
    add_cases(fake, 2001, SINCE)
    known = query(fake, IMPORT_QUERY).json()["nextRecordsUrl"].rsplit("/", 1)[1].split("-")[0]
    response = get(fake, f"/services/data/v{API_VERSION}/query/{locator.format(known=known)}")
    assert response.status_code == 400
    assert response.json() == [
        {"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}
    ]


def test_expired_and_released_locators_are_invalid(fake: FakeSalesforce) -> None:
    """A locator expires, and an eleventh open cursor releases the oldest."""
    add_cases(fake, 2001, SINCE)
    oldest = query(fake, IMPORT_QUERY).json()["nextRecordsUrl"]
    later = [query(fake, IMPORT_QUERY).json()["nextRecordsUrl"] for _ in range(10)]
    assert get(fake, oldest).status_code == 400
    assert get(fake, later[0]).status_code == 200
    fake.expire_query_locators()
    assert get(fake, later[-1]).json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_limits_count_every_call(fake: FakeSalesforce) -> None:
    """limits/ reports DailyApiRequests Max and Remaining; each query and queryMore counts."""
    fake.set_usage(100, 5000)
    add_cases(fake, 2001, SINCE)
    more = query(fake, IMPORT_QUERY).json()["nextRecordsUrl"]
    get(fake, more)
    limits = get(fake, f"/services/data/v{API_VERSION}/limits/").json()
    # 100 before, a query, a queryMore and the limits call itself.
    assert limits["DailyApiRequests"] == {"Max": 5000, "Remaining": 4897}
    assert fake.api_usage == (103, 5000)


def test_relationship_errors_name_the_field(fake: FakeSalesforce) -> None:
    """An unknown relationship or related field is INVALID_FIELD, as Salesforce answers."""
    unknown = query(fake, "SELECT Account.Name FROM Case")
    assert unknown.status_code == 400
    assert unknown.json()[0]["errorCode"] == "INVALID_FIELD"
    assert "Didn't understand relationship 'Account'" in unknown.json()[0]["message"]
    bad_field = query(fake, "SELECT Contact.Shoe FROM Case").json()[0]
    assert bad_field["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Shoe' on entity 'Contact'" in bad_field["message"]


def test_queries_need_a_session(fake: FakeSalesforce) -> None:
    """Without a valid session the query is a 401 INVALID_SESSION_ID."""
    response = query(fake, IMPORT_QUERY, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()[0]["errorCode"] == "INVALID_SESSION_ID"
