"""Issue 14, defect 8: with INBOUND_SIGNATURES_REQUIRED=true the signed `webhook-id` is the
idempotency key, whatever an (unsigned) `Idempotency-Key` header says: a captured delivery
replayed with a new header answers the original request and creates nothing."""

from __future__ import annotations

import json

import pytest

from shared.runtime import get_runtime

from .conftest import Api
from .test_webhooks import post_raw, signed


@pytest.mark.parametrize("first_has_key", [False, True], ids=["first-without-key", "first-with-key"])
def test_replay_with_a_new_idempotency_key_answers_the_original(
    api: Api, sandbox, inbound_secret, customer_id, first_has_key
):
    sandbox.customers.set(customer_id, eligible=False)  # final at once: the active lock no longer answers replays
    body = json.dumps({"customerId": customer_id}).encode()
    delivery = signed(inbound_secret, body)
    first_headers = {**delivery, "Idempotency-Key": "sender-key-1"} if first_has_key else delivery
    first = post_raw(api, body, first_headers)
    assert first.status == 422  # not eligible: refused by Partner Center, stored as `rejected`
    request_id = first.json()["requestId"]
    sandbox.reset_calls()

    replay = post_raw(api, body, {**delivery, "Idempotency-Key": "attacker-chosen-key"})

    assert replay.json().get("requestId") == request_id, replay.json()
    assert replay.headers.get("idempotent-replayed") == "true"
    assert [r.request_id for r in get_runtime().store.all_records()] == [request_id]
    assert sandbox.calls("partner_center") == []


def test_distinct_signed_deliveries_are_distinct_requests(api: Api, sandbox, inbound_secret, customer_id):
    """The key is the webhook-id, not the body: a new delivery (new id) is a new request."""
    sandbox.customers.set(customer_id, eligible=False)
    body = json.dumps({"customerId": customer_id}).encode()
    first = post_raw(api, body, signed(inbound_secret, body)).json()["requestId"]
    second = post_raw(api, body, signed(inbound_secret, body)).json()["requestId"]
    assert first != second
