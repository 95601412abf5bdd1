"""Zammad's own CTI request spec, replayed against /hooks/cti as its sequences send it.

The sequences below are those of zammad/zammad spec/requests/integration/cti_spec.rb ("does
log call" and "does queue param tests"): Rails form posts (a list as user[]=…, the call id as
call_id), bare hang-ups carrying only direction, call id and cause, one answer posted as JSON
after its call's hang-up, an anonymous caller and a queue. One change: the spec's customer
number, 4912347114711, is not a valid number anywhere (phonenumbers refuses it, so no
customer could be recognised by it); 4930609854180, a Berlin number from Zammad's own
example data, stands in for it.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from sqlalchemy import select

from middleware.store.tables import customers, interactions
from tests.values import CTI_SECRET

CUSTOMER = "4930609854180"  # for the spec's 4912347114711 (see above)
LINE = "4930600000000"

# (params, sent as JSON?) in the spec's order.
LOG_CALL = [
    ({"event": "newCall", "direction": "out", "from": LINE, "to": CUSTOMER,
      "call_id": "1234567890-1", "user": "user 1"}, False),
    ({"event": "hangup", "direction": "out", "call_id": "1234567890-1", "cause": "cancel"}, False),
    ({"event": "newCall", "direction": "out", "from": LINE, "to": CUSTOMER,
      "call_id": "1234567890-2", "user": ["user 1"]}, False),
    ({"event": "answer", "direction": "out", "call_id": "1234567890-2", "from": LINE,
      "to": CUSTOMER}, False),
    ({"event": "hangup", "direction": "out", "call_id": "1234567890-2", "cause": "normalClearing",
      "from": LINE, "to": CUSTOMER}, False),
    ({"event": "newCall", "direction": "in", "to": LINE, "from": CUSTOMER,
      "call_id": "1234567890-3", "user": "user 1"}, False),
    ({"event": "answer", "direction": "in", "call_id": "1234567890-3", "to": LINE,
      "from": CUSTOMER}, False),
    ({"event": "hangup", "direction": "in", "call_id": "1234567890-3", "cause": "normalClearing",
      "to": LINE, "from": CUSTOMER}, False),
    ({"event": "answer", "direction": "in", "call_id": "1234567890-3", "to": LINE,
      "from": CUSTOMER}, True),  # an answer after the hang-up, as JSON
    ({"event": "newCall", "direction": "in", "to": LINE, "from": CUSTOMER,
      "call_id": "1234567890-4", "user": ["user 1", "user 2"]}, False),
    ({"event": "answer", "direction": "in", "call_id": "1234567890-4", "to": LINE,
      "from": CUSTOMER, "user": "voicemail"}, False),
    ({"event": "hangup", "direction": "in", "call_id": "1234567890-4", "cause": "normalClearing",
      "to": LINE, "from": CUSTOMER}, False),
    ({"event": "newCall", "direction": "in", "to": LINE, "from": CUSTOMER,
      "call_id": "1234567890-5", "user": "user 1,user 2"}, False),
    ({"event": "hangup", "direction": "in", "call_id": "1234567890-5", "cause": "normalClearing",
      "to": LINE, "from": CUSTOMER}, False),
    ({"event": "newCall", "direction": "in", "to": LINE, "from": "49999992222222",
      "call_id": "1234567890-6", "user": "user 1,user 2"}, False),
    ({"event": "newCall", "direction": "in", "to": LINE, "from": "anonymous",
      "call_id": "1234567890-7", "user": "user 1,user 2", "queue": "some_queue_name"}, False),
    ({"event": "newCall", "direction": "in", "to": LINE, "from": "anonymous",
      "call_id": "1234567890-8", "user": "", "queue": "some_queue_name"}, False),
]  # fmt: skip


def rails_form(params: dict[str, object]) -> bytes:
    """Encode params as Rails' request specs post them: a list as name[]=… repeated."""
    pairs: list[tuple[str, object]] = []
    for name, value in params.items():
        if isinstance(value, list):
            pairs += [(f"{name}[]", item) for item in value]
        else:
            pairs.append((name, value))
    return urlencode(pairs).encode()


def test_zammads_log_call_sequence_gets_200_and_lands_on_the_right_customer(client, worker, core):
    """Every post is accepted; each call ends as the spec's events say, on one customer."""
    path = "/hooks/cti/" + quote(CTI_SECRET, safe="")
    for params, as_json in LOG_CALL:
        if as_json:
            response = client.post(path, data=json.dumps(params), content_type="application/json")
        else:
            response = client.post(path, data=rails_form(params),
                                   content_type="application/x-www-form-urlencoded")  # fmt: skip
        assert response.status_code == 200, (params, response.get_json())
        worker.drain()
    with core.engine.connect() as conn:
        calls = {row.external_id: row for row in conn.execute(
            select(interactions).where(interactions.c.kind == "call"))}  # fmt: skip
        people = conn.execute(select(customers.c.id)).scalars().all()
    assert sorted(calls) == [f"1234567890-{n}" for n in range(1, 9)]
    status = {call_id[-1]: row.status for call_id, row in calls.items()}
    assert status == {"1": "canceled", "2": "completed", "3": "completed", "4": "completed",
                      "5": "completed", "6": "ringing", "7": "ringing", "8": "ringing"}  # fmt: skip
    assert [calls[f"1234567890-{n}"].direction for n in range(1, 6)] == [
        "outbound", "outbound", "inbound", "inbound", "inbound"]  # fmt: skip
    # The customer's number, dialled or calling, is one customer; the invalid and the
    # anonymous callers are nobody.
    assert len(people) == 1
    assert {calls[f"1234567890-{n}"].customer_id for n in range(1, 6)} == {people[0]}
    assert {calls[f"1234567890-{n}"].customer_id for n in (6, 7, 8)} == {None}
    assert calls["1234567890-2"].agent == "user 1"
    assert calls["1234567890-4"].agent == "voicemail"  # the answer names who took it
    assert calls["1234567890-5"].agent == "user 1,user 2"
    assert calls["1234567890-7"].team == "some_queue_name"
    assert calls["1234567890-8"].agent is None and calls["1234567890-8"].team == "some_queue_name"
