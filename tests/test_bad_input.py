"""Every malformed request: a 4xx problem+json, no Partner Center call, nothing stored."""

from __future__ import annotations

import pytest

from shared.runtime import get_runtime

from .conftest import Api

CUSTOMER = "4c721420-72ad-4708-a0a7-371a2f7b0969"
JSON = {"Content-Type": "application/json"}

BAD_UPGRADE_REQUESTS = [
    # (id, headers, body, expected status)
    ("no-content-type", {}, b'{"customerId": "%s"}' % CUSTOMER.encode(), 415),
    ("text-plain", {"Content-Type": "text/plain"}, b'{"customerId": "%s"}' % CUSTOMER.encode(), 415),
    ("form", {"Content-Type": "application/x-www-form-urlencoded"}, b"customerId=" + CUSTOMER.encode(), 415),
    ("latin1", {"Content-Type": "application/json; charset=iso-8859-1"}, b"{}", 415),
    ("empty", JSON, b"", 400),
    ("not-json", JSON, b"customerId", 400),
    ("truncated", JSON, b'{"customerId": "', 400),
    ("array", JSON, b"[]", 400),
    ("string", JSON, b'"x"', 400),
    ("null", JSON, b"null", 400),
    ("missing-customer", JSON, b'{"productFamily": "Azure"}', 400),
    ("null-customer", JSON, b'{"customerId": null}', 400),
    ("number-customer", JSON, b'{"customerId": 42}', 400),
    ("huge-number", JSON, b'{"customerId": 1' + b"0" * 5000 + b"}", 413),
    ("bool-customer", JSON, b'{"customerId": true}', 400),
    ("object-customer", JSON, b'{"customerId": {"id": "x"}}', 400),
    ("braced-guid", JSON, b'{"customerId": "{%s}"}' % CUSTOMER.encode(), 400),
    ("sql-injection", JSON, b'{"customerId": "\' OR 1=1 --"}', 400),
    ("odata-injection", JSON, b'{"customerId": "x\' or PartitionKey ne \'"}', 400),
    ("unicode-lookalike", JSON, '{"customerId": "4c721420-72ad-4708-a0a7-371a2f7b096\u0669"}'.encode(), 400),
    ("duplicate-keys", JSON, b'{"customerId": "%s", "customerId": "%s"}' % (CUSTOMER.encode(), CUSTOMER.encode()), 400),
    ("unknown-field", JSON, b'{"customerId": "%s", "customerID": "x"}' % CUSTOMER.encode(), 400),
    ("bad-family", JSON, b'{"customerId": "%s", "productFamily": "Office"}' % CUSTOMER.encode(), 400),
    ("family-number", JSON, b'{"customerId": "%s", "productFamily": 1}' % CUSTOMER.encode(), 400),
    ("nan", JSON, b'{"customerId": NaN}', 400),
    ("invalid-utf8", JSON, b'{"customerId": "\xff\xfe"}', 400),
    ("too-large", JSON, b'{"customerId": "' + b"a" * 5000 + b'"}', 413),
    ("deep-nesting", JSON, b"[" * 1500 + b"]" * 1500, 400),
]


@pytest.mark.parametrize(
    ("headers", "body", "status"), [case[1:] for case in BAD_UPGRADE_REQUESTS], ids=[c[0] for c in BAD_UPGRADE_REQUESTS]
)
def test_bad_upgrade_request(api: Api, sandbox, headers, body, status):
    reply = api.call("submit_product_upgrade", "POST", "product-upgrades", body=body, headers=headers)
    assert reply.status == status
    assert reply.content_type.startswith("application/problem+json")
    problem = reply.json()
    assert problem["status"] == status and problem["title"] and problem["detail"] and problem["type"]
    assert sandbox.calls("partner_center") == []
    assert list(get_runtime().store.all_records()) == []


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [case[1:] for case in BAD_UPGRADE_REQUESTS[:12]],
    ids=[c[0] for c in BAD_UPGRADE_REQUESTS[:12]],
)
def test_bad_eligibility_request(api: Api, sandbox, headers, body, status):
    reply = api.call(
        "check_product_upgrade_eligibility", "POST", "product-upgrades/eligibility", body=body, headers=headers
    )
    assert reply.status == status
    assert sandbox.calls("partner_center") == []


@pytest.mark.parametrize(
    ("upgrade_id", "params"),
    [
        ("not-a-guid", {"customerId": CUSTOMER}),
        (CUSTOMER, {}),
        (CUSTOMER, {"customerId": "x"}),
        (CUSTOMER, {"customerId": CUSTOMER, "productFamily": "Office"}),
    ],
)
def test_bad_status_request(api: Api, sandbox, upgrade_id, params):
    reply = api.call(
        "get_product_upgrade_status",
        "GET",
        f"product-upgrades/{upgrade_id}",
        route_params={"upgradeId": upgrade_id},
        params=params,
    )
    assert reply.status == 400
    assert reply.content_type.startswith("application/problem+json")
    assert sandbox.calls("partner_center") == []


def test_bad_request_id_is_400(api: Api):
    reply = api.call(
        "get_product_upgrade_request", "GET", "product-upgrade-requests/x", route_params={"requestId": "x' or 1 eq 1"}
    )
    assert reply.status == 400


def test_bad_input_builds_no_clients_and_creates_no_table(api: Api, azurite, app_env):
    """Input is checked before the runtime (storage, Key Vault clients) is built."""
    from azure.data.tables import TableServiceClient

    import shared.runtime

    reply = api.call("submit_product_upgrade", "POST", "product-upgrades", body=b"{", headers=JSON)
    assert reply.status == 400
    assert shared.runtime._runtime is None
    tables = {t.name for t in TableServiceClient.from_connection_string(azurite.connection_string).list_tables()}
    assert app_env["UPGRADE_REQUESTS_TABLE"] not in tables
