"""Input validation and Location parsing: strict, with the reason in the message."""

import json

import pytest

from shared.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType, UpstreamError
from shared.identifiers import is_guid
from shared.partner_center.client import parse_upgrade_id
from shared.validation import MAX_BODY_BYTES, read_json_object, upgrade_target

JSON = {"Content-Type": "application/json"}
CUSTOMER = "4c721420-72ad-4708-a0a7-371a2f7b0969"
UPGRADE = "42d075a4-bfe7-43e7-af6d-7c68a57edcb4"
FIELDS = ("customerId", "productFamily")


def test_valid_body_is_normalised():
    body = json.dumps({"customerId": CUSTOMER.upper(), "productFamily": "azure"}).encode()
    target = upgrade_target(read_json_object(JSON, body, FIELDS))
    assert target.customer_id == CUSTOMER
    assert target.product_family == "Azure"


def test_product_family_defaults_to_azure():
    assert upgrade_target({"customerId": CUSTOMER}).product_family == "Azure"


@pytest.mark.parametrize(
    ("headers", "body", "error", "fragment"),
    [
        ({}, b"{}", UnsupportedMediaType, "Content-Type"),
        ({"Content-Type": "text/plain"}, b"{}", UnsupportedMediaType, "Content-Type"),
        ({"Content-Type": "application/json; charset=latin-1"}, b"{}", UnsupportedMediaType, "utf-8"),
        (JSON, b"x" * (MAX_BODY_BYTES + 1), PayloadTooLarge, "limit"),
        (JSON, b"\xff\xfe", InvalidRequest, "UTF-8"),
        (JSON, b"{", InvalidRequest, "not valid JSON"),
        (JSON, b"[]", InvalidRequest, "JSON object"),
        (JSON, b'{"customerId": 1, "customerId": 2}', InvalidRequest, "duplicate key"),
        (JSON, b'{"customerId": NaN}', InvalidRequest, "not valid JSON"),
        (JSON, b'{"customerID": "x"}', InvalidRequest, "Unknown field"),
        (JSON, b"[" * 2000 + b"]" * 2000, InvalidRequest, "JSON"),
    ],
)
def test_bad_bodies_are_rejected_with_reason(headers, body, error, fragment):
    with pytest.raises(error) as raised:
        read_json_object(headers, body, FIELDS)
    assert fragment in raised.value.detail


@pytest.mark.parametrize(
    "customer_id",
    [
        None,
        "",
        123,
        "not-a-guid",
        "{4c721420-72ad-4708-a0a7-371a2f7b0969}",
        "4c72142072ad4708a0a7371a2f7b0969",
        "4c721420-72ad-4708-a0a7-371a2f7b096９",  # fullwidth digit look-alike
        "4c721420-72ad-4708-a0a7-371a2f7b0969\n",
    ],
)
def test_customer_id_must_be_a_canonical_ascii_guid(customer_id):
    with pytest.raises(InvalidRequest):
        upgrade_target({"customerId": customer_id})


@pytest.mark.parametrize("family", ["AzurePlan", "", None, 5, "Azure ", "Ａzure"])
def test_unknown_product_family_is_rejected(family):
    with pytest.raises(InvalidRequest) as raised:
        upgrade_target({"customerId": CUSTOMER, "productFamily": family})
    assert "productFamily" in raised.value.detail


@pytest.mark.parametrize(
    "location",
    [
        f"productUpgrades/{UPGRADE}",
        f"/v1/productUpgrades/{UPGRADE}",
        f"https://api.partnercenter.microsoft.com/v1/productupgrades/{UPGRADE.upper()}",
    ],
)
def test_location_relative_or_absolute_yields_the_guid(location):
    assert parse_upgrade_id(location, "https://api.partnercenter.microsoft.com") == UPGRADE


@pytest.mark.parametrize(
    "location",
    [
        None,
        "",
        "productUpgrades/",
        "productUpgrades/not-a-guid",
        f"customers/{UPGRADE}",
        f"productUpgrades/{UPGRADE}/x",
    ],
)
def test_odd_location_is_a_clear_upstream_error(location):
    with pytest.raises(UpstreamError) as raised:
        parse_upgrade_id(location, "https://api.partnercenter.microsoft.com")
    assert "Location" in raised.value.detail


def test_guid_check_is_strict():
    assert is_guid(CUSTOMER) and is_guid(CUSTOMER.upper())
    assert not is_guid(CUSTOMER + " ") and not is_guid(b"x") and not is_guid(CUSTOMER.replace("-", ""))
