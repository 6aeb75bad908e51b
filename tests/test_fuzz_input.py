"""Bad input, hand-written and generated: every answer is a 4xx problem+json, nothing is sent, nothing stored.

Beyond tests/test_bad_input.py: encodings (UTF-16/32, BOMs, overlong UTF-8, escaped lone
surrogates), wrong types and sizes, Content-Type/charset, MS-CorrelationId and Idempotency-Key
abuse, injection strings, duplicate keys, huge numbers, deep nesting, GUID look-alikes, and the
GET routes' parameters. Then `hypothesis`: generated bodies and headers that are not valid
upgrade requests (300 examples here, 10,000 in the `slow` run), and generated valid ones, which
must be accepted.

"Nothing sent" is checked on every sandbox service (no token, no Key Vault read either), and
"nothing stored" on the whole table (no record, no idempotency key, no active-customer lock).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared.runtime import get_runtime

from .chaos_support import table_is_empty
from .conftest import Api, Reply

CUSTOMER = "4c721420-72ad-4708-a0a7-371a2f7b0969"
UPGRADE = "9b2e7c1d-5f3a-4e8b-a6d0-1c2b3a4d5e6f"
JSON = {"Content-Type": "application/json"}
PROBLEM = "application/problem+json"
PROBLEM_TYPE = re.compile(r"^urn:product-upgrades:problem:[a-z-]+$")
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_BODY = 4096

SUBMIT = ("submit_product_upgrade", "POST", "product-upgrades")
ELIGIBILITY = ("check_product_upgrade_eligibility", "POST", "product-upgrades/eligibility")


def doc(customer: Any = CUSTOMER, **extra: Any) -> bytes:
    return json.dumps({"customerId": customer, **extra}).encode()


def raw(text: str) -> bytes:
    """A body written by hand (so escapes, duplicates and odd spacing survive); `@C` is CUSTOMER."""
    return text.replace("@C", CUSTOMER).encode("utf-8", "surrogatepass")


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in text)


def digits(text: str, zero: int) -> str:
    """Every ASCII digit replaced by the digit of another script (zero = code point of its 0)."""
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in text)


def swap(text: str, old: str, new: str) -> str:
    return text.replace(old, new)


# --- hand-written cases ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One malformed request: `routes` says which functions it is sent to."""

    id: str
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=lambda: dict(JSON))
    routes: tuple[str, ...] = ("submit", "eligibility")


def header_case(case_id: str, headers: Mapping[str, str], routes=("submit", "eligibility")) -> Case:
    return Case(case_id, 400, doc(), {**JSON, **headers}, routes)


BODY_CASES = [
    # Encodings: the app reads UTF-8 (an optional BOM) and nothing else.
    Case("utf16-with-bom", 400, doc().decode().encode("utf-16")),
    Case("utf16-le-no-bom", 400, doc().decode().encode("utf-16-le")),
    Case("utf16-be-no-bom", 400, doc().decode().encode("utf-16-be")),
    Case("utf32-with-bom", 400, doc().decode().encode("utf-32")),
    Case("utf32-be-no-bom", 400, doc().decode().encode("utf-32-be")),
    Case(
        "utf16-declared-and-sent",
        415,
        doc().decode().encode("utf-16"),
        {"Content-Type": "application/json; charset=utf-16"},
    ),
    Case("utf32-declared", 415, doc(), {"Content-Type": "application/json; charset=utf-32"}),
    Case("utf8-bom-twice", 400, b"\xef\xbb\xbf\xef\xbb\xbf" + doc()),
    Case("bom-only", 400, b"\xef\xbb\xbf"),
    Case("overlong-quote", 400, b'{"customerId": \xc0\xa2' + CUSTOMER.encode() + b'"}'),
    Case("overlong-nul", 400, b'{"customerId": "' + CUSTOMER.encode() + b'\xc0\x80"}'),
    Case("overlong-hyphen-3-byte", 400, doc().replace(b"-", b"\xe0\x80\xad", 1)),
    Case("cesu8-surrogate", 400, b'{"customerId": "\xed\xa0\x80"}'),
    Case("latin1-e-acute", 400, b'{"customerId": "caf\xe9"}'),
    Case("windows-1252-quotes", 400, b'{"customerId": \x93' + CUSTOMER.encode() + b"\x94}"),
    Case("escaped-lone-high-surrogate", 400, raw('{"customerId": "\\ud800"}')),
    Case("escaped-lone-low-surrogate-key", 400, raw('{"customerId": "@C", "\\udc00": 1}')),
    Case("escaped-surrogate-in-family", 400, raw('{"customerId": "@C", "productFamily": "Azure\\udbff"}')),
    Case("escaped-emoji-family", 400, raw('{"customerId": "@C", "productFamily": "\\ud83d\\ude00"}')),
    Case("trailing-nul-byte", 400, doc() + b"\x00"),
    Case("raw-control-char-in-string", 400, b'{"customerId": "\x01' + CUSTOMER.encode() + b'"}'),
    # Wrong shapes and types.
    Case("whitespace-only", 400, b" \t\r\n "),
    Case("empty-object", 400, b"{}"),
    Case("customer-list", 400, doc([CUSTOMER])),
    Case("customer-float", 400, doc(4.2e1)),
    Case("customer-negative-zero", 400, b'{"customerId": -0}'),
    Case("customer-empty-string", 400, doc("")),
    Case("family-only-null", 400, doc(CUSTOMER, productFamily=None)),
    Case("family-empty", 400, doc(CUSTOMER, productFamily="")),
    Case("family-list", 400, doc(CUSTOMER, productFamily=["Azure"])),
    Case("family-leading-space", 400, doc(CUSTOMER, productFamily=" Azure")),
    Case("family-nul", 400, doc(CUSTOMER, productFamily="Azure\x00")),
    Case("family-plan", 400, doc(CUSTOMER, productFamily="Azure plan")),
    Case("family-fullwidth", 400, doc(CUSTOMER, productFamily=fullwidth("Azure"))),
    Case("family-cyrillic-a", 400, doc(CUSTOMER, productFamily="\u0410zure")),
    Case("family-zwj", 400, doc(CUSTOMER, productFamily="Az\u200dure")),
    Case("family-accented", 400, doc(CUSTOMER, productFamily="Azur\u00e9")),
    # Syntax that is almost JSON.
    Case("trailing-comma", 400, raw('{"customerId": "@C",}')),
    Case("single-quotes", 400, raw("{'customerId': '@C'}")),
    Case("comment", 400, raw('{"customerId": "@C" /* hi */}')),
    Case("two-documents", 400, doc() + doc()),
    Case("unquoted-key", 400, raw('{customerId: "@C"}')),
    Case("infinity", 400, b'{"customerId": Infinity}'),
    Case("minus-infinity", 400, b'{"customerId": -Infinity}'),
    # Duplicate keys, including ones that only collide once escapes are decoded.
    Case(
        "duplicate-family",
        400,
        raw('{"customerId": "@C", "productFamily": "Azure", "productFamily": "azure"}'),
    ),
    Case("duplicate-via-escape", 400, raw('{"customerId": "@C", "customer\\u0049d": "@C"}')),
    Case("differently-cased-key", 400, raw('{"customerId": "@C", "CustomerId": "@C"}')),
    Case("duplicate-inside-nested", 400, raw('{"customerId": {"a": 1, "a": 2}}')),
    # Huge numbers and deep nesting, all inside the 4 KiB limit.
    Case("4000-digit-integer", 400, b'{"customerId": 1' + b"0" * 4000 + b"}"),
    Case("exponent-overflow", 400, b'{"customerId": 1e999999}'),
    Case("exponent-underflow", 400, b'{"customerId": 1e-999999}'),
    Case("huge-negative", 400, b'{"customerId": -' + b"9" * 3000 + b"}"),
    Case("nested-objects-650", 400, b'{"a":' * 650 + b"1" + b"}" * 650),
    Case("nested-arrays-in-value", 400, b'{"customerId": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
    # Sizes around the 4 KiB limit.
    Case("4097-bytes-of-valid-json", 413, doc() + b" " * (MAX_BODY + 1 - len(doc()))),
    Case("one-mebibyte", 413, b'{"customerId": "' + b"a" * (1 << 20) + b'"}'),
    Case("large-and-wrong-content-type", 415, b"x" * 10000, {"Content-Type": "text/plain"}),
    # Injection strings where the GUID should be.
    Case("odata-close-quote", 400, doc(CUSTOMER + "' or RowKey ne '")),
    Case("odata-partition", 400, doc("x' or PartitionKey eq 'active")),
    Case("odata-function", 400, doc(f"{CUSTOMER}') or substringof('a',RowKey")),
    Case("sql-drop", 400, doc("1; DROP TABLE productupgraderequests;--")),
    Case("sql-union", 400, doc(f"{CUSTOMER}' UNION SELECT * FROM secrets--")),  # noqa: S608 (test input)
    Case("path-traversal", 400, doc("../../../../etc/passwd")),
    Case("path-traversal-encoded", 400, doc("..%2f..%2f..%2fv1%2fproductUpgrades")),
    Case("path-in-guid", 400, doc(f"{CUSTOMER}/../../eligibility")),
    Case("crlf-header-injection", 400, doc(f"{CUSTOMER}\r\nX-Injected: 1")),
    Case("trailing-newline", 400, doc(CUSTOMER + "\n")),
    Case("jndi", 400, doc("${jndi:ldap://127.0.0.1/a}")),
    Case("template", 400, doc("{{7*7}}")),
    Case("format-string", 400, doc("%s%s%s%n")),
    Case("html", 400, doc("<script>alert(1)</script>")),
    # GUID look-alikes: right shape to a human, not ASCII hex.
    Case("guid-fullwidth", 400, doc(fullwidth(CUSTOMER))),
    Case("guid-arabic-indic-digits", 400, doc(digits(CUSTOMER, 0x0660))),
    Case("guid-persian-digits", 400, doc(digits(CUSTOMER, 0x06F0))),
    Case("guid-devanagari-digits", 400, doc(digits(CUSTOMER, 0x0966))),
    Case("guid-math-bold-digits", 400, doc(digits(CUSTOMER, 0x1D7CE))),
    Case("guid-superscript-two", 400, doc(swap(CUSTOMER, "2", "\u00b2"))),
    Case("guid-cyrillic-a", 400, doc(swap(CUSTOMER, "a", "\u0430"))),
    Case("guid-cyrillic-c", 400, doc(swap(CUSTOMER, "c", "\u0441"))),
    Case("guid-upper-cyrillic-a", 400, doc(swap(CUSTOMER.upper(), "A", "\u0410"))),
    Case("guid-greek-alpha", 400, doc(swap(CUSTOMER, "a", "\u03b1"))),
    Case("guid-zero-width-joiner", 400, doc(CUSTOMER[:8] + "\u200d" + CUSTOMER[8:])),
    Case("guid-zero-width-space", 400, doc("\u200b" + CUSTOMER)),
    Case("guid-bom-inside-string", 400, doc("\ufeff" + CUSTOMER)),
    Case("guid-non-breaking-hyphen", 400, doc(swap(CUSTOMER, "-", "\u2011"))),
    Case("guid-en-dash", 400, doc(swap(CUSTOMER, "-", "\u2013"))),
    Case("guid-minus-sign", 400, doc(swap(CUSTOMER, "-", "\u2212"))),
    Case("guid-soft-hyphen", 400, doc(swap(CUSTOMER, "-", "\u00ad"))),
    Case("guid-rtl-override", 400, doc("\u202e" + CUSTOMER)),
    Case("guid-combining-acute", 400, doc(CUSTOMER + "\u0301")),
    Case("guid-no-hyphens", 400, doc(CUSTOMER.replace("-", ""))),
    Case("guid-urn", 400, doc("urn:uuid:" + CUSTOMER)),
    Case("guid-parenthesised", 400, doc(f"({CUSTOMER})")),
    Case("guid-non-hex-letter", 400, doc("g" + CUSTOMER[1:])),
    Case("guid-35-chars", 400, doc(CUSTOMER[:-1])),
    Case("guid-37-chars", 400, doc(CUSTOMER + "0")),
    Case("guid-hyphens-misplaced", 400, doc(CUSTOMER[:7] + "-" + CUSTOMER[7] + CUSTOMER[9:])),
    Case("guid-nbsp-padded", 400, doc("\u00a0" + CUSTOMER + "\u00a0")),
]

CONTENT_TYPE_CASES = [
    Case(f"content-type-{name}", 415, doc(), {"Content-Type": value})
    for name, value in [
        ("json-patch", "application/json-patch+json"),
        ("problem-json", "application/problem+json"),
        ("text-json", "text/json"),
        ("jsonp", "application/jsonp"),
        ("json-seq", "application/json-seq"),
        ("crlf-injected", "application/json\r\nX-Injected: 1"),
        ("multipart", "multipart/form-data; boundary=x"),
        ("two-charsets", "application/json; charset=utf-8; charset=utf-16"),
        ("extra-parameter", "application/json; charset=utf-8; profile=x"),
        ("wildcard", "*/*"),
        ("empty", ""),
        ("fullwidth", fullwidth("application") + "/json"),
        ("charset-utf8-alias", "application/json; charset=utf8"),
        ("charset-latin1", "application/json; charset=latin1"),
        ("charset-empty", "application/json; charset="),
        ("nul", "application/json\x00"),
    ]
]

HEADER_CASES = [
    header_case("correlation-not-guid", {"MS-CorrelationId": "not-a-guid"}),
    header_case("correlation-empty", {"MS-CorrelationId": ""}),
    header_case("correlation-braced", {"MS-CorrelationId": "{" + CUSTOMER + "}"}),
    header_case("correlation-crlf", {"MS-CorrelationId": f"{CUSTOMER}\r\nX-Injected: 1"}),
    header_case("correlation-fullwidth", {"MS-CorrelationId": fullwidth(CUSTOMER)}),
    header_case("correlation-arabic-digits", {"x-ms-correlation-id": digits(CUSTOMER, 0x0660)}),
    header_case("correlation-zwj", {"MS-CorrelationId": CUSTOMER[:4] + "\u200d" + CUSTOMER[4:]}),
    header_case("correlation-10k", {"MS-CorrelationId": "a" * 10_000}),
    header_case("correlation-sql", {"MS-CorrelationId": "' OR 1=1 --"}),
    header_case("correlation-two-values", {"MS-CorrelationId": f"{CUSTOMER}, {UPGRADE}"}),
    header_case("x-correlation-not-guid", {"x-ms-correlation-id": "../../etc/passwd"}),
    header_case("idempotency-empty", {"Idempotency-Key": ""}, ("submit",)),
    header_case("idempotency-blank", {"Idempotency-Key": "   "}, ("submit",)),
    header_case("idempotency-256", {"Idempotency-Key": "k" * 256}, ("submit",)),
    header_case("idempotency-64k", {"Idempotency-Key": "k" * 65536}, ("submit",)),
    header_case("idempotency-crlf", {"Idempotency-Key": "run-1\r\nX-Injected: 1"}, ("submit",)),
    header_case("idempotency-nul", {"Idempotency-Key": "run\x00-1"}, ("submit",)),
    header_case("idempotency-tab", {"Idempotency-Key": "run\t1"}, ("submit",)),
    header_case("idempotency-non-ascii", {"Idempotency-Key": "clé-1"}, ("submit",)),
    header_case("idempotency-emoji", {"Idempotency-Key": "run-\U0001f600"}, ("submit",)),
    header_case("idempotency-zero-width", {"Idempotency-Key": "run\u200b1"}, ("submit",)),
    header_case("idempotency-lone-surrogate", {"Idempotency-Key": "run-\ud800"}, ("submit",)),
    header_case("idempotency-del", {"Idempotency-Key": "run\x7f"}, ("submit",)),
]

# Callback URLs the SSRF guard must refuse. Only IP literals and `localhost`: nothing here may
# make the guard ask a DNS server (tests stay on loopback).
BAD_CALLBACK_URLS = [
    ("http", "http://203.0.113.10/hook"),
    ("loopback", "https://127.0.0.1/hook"),
    ("loopback-short", "https://127.1/hook"),
    ("loopback-decimal", "https://2130706433/hook"),
    ("loopback-hex", "https://0x7f000001/hook"),
    ("localhost", "https://localhost/hook"),
    ("ipv6-loopback", "https://[::1]/hook"),
    ("ipv4-mapped-ipv6", "https://[::ffff:127.0.0.1]/hook"),
    ("metadata-endpoint", "https://169.254.169.254/metadata/identity/oauth2/token"),
    ("private-10", "https://10.0.0.1/hook"),
    ("private-192", "https://192.168.1.1/hook"),
    ("unspecified", "https://0.0.0.0/hook"),
    ("link-local-v6", "https://[fe80::1]/hook"),
    ("userinfo", "https://user:pass@203.0.113.10/hook"),
    ("fragment", "https://203.0.113.10/hook#x"),
    ("bad-port", "https://203.0.113.10:99999/hook"),
    ("no-host", "https:///hook"),
    ("file", "file:///etc/passwd"),
    ("gopher", "gopher://127.0.0.1:6379/_INFO"),
    ("javascript", "javascript:alert(1)"),
    ("non-ascii-host", "https://ex\u00e4mple.com/hook"),
    ("crlf", "https://203.0.113.10/hook\r\nX-Injected: 1"),
    ("too-long", "https://203.0.113.10/" + "a" * 2100),
    ("empty", ""),
]
CALLBACK_CASES = [
    Case(f"callback-{name}", 400, doc(CUSTOMER, callbackUrl=url), routes=("submit",)) for name, url in BAD_CALLBACK_URLS
] + [
    Case("callback-number", 400, doc(CUSTOMER, callbackUrl=443), routes=("submit",)),
    Case("callback-object", 400, doc(CUSTOMER, callbackUrl={"url": "https://203.0.113.10/"}), routes=("submit",)),
    Case("callback-on-eligibility", 400, doc(CUSTOMER, callbackUrl="https://203.0.113.10/"), routes=("eligibility",)),
]

POST_CASES = BODY_CASES + CONTENT_TYPE_CASES + HEADER_CASES + CALLBACK_CASES
POST_PARAMS = [
    pytest.param(case, route, id=f"{route}-{case.id}")
    for case in POST_CASES
    for route in ("submit", "eligibility")
    if route in case.routes
]

BAD_IDS = [
    "",
    "x",
    "null",
    "../" + CUSTOMER,
    CUSTOMER + "/../eligibility",
    CUSTOMER + "%00",
    CUSTOMER + "\n",
    CUSTOMER + "\r\nX-Injected: 1",
    "{" + CUSTOMER + "}",
    "urn:uuid:" + CUSTOMER,
    CUSTOMER.replace("-", ""),
    fullwidth(CUSTOMER),
    digits(CUSTOMER, 0x0660),
    swap(CUSTOMER, "c", "\u0441"),
    CUSTOMER[:8] + "\u200d" + CUSTOMER[8:],
    CUSTOMER + "' or PartitionKey ne '",
    "' or RowKey eq 'request",
    "*",
    "%2e%2e%2f%2e%2e",
    "a" * 5000,
]


def problem_checks(reply: Reply, status: int) -> None:
    assert reply.status == status, reply.body[:300]
    assert reply.content_type.startswith(PROBLEM)
    problem = reply.json()
    assert problem["status"] == status
    assert PROBLEM_TYPE.match(problem["type"])
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    assert GUID.match(problem["correlationId"])
    assert reply.headers.get("ms-correlationid") == problem["correlationId"]


def nothing_happened(sandbox) -> None:
    assert sandbox.calls("partner_center") == []
    assert sandbox.calls() == []  # not even a token or a Key Vault read
    assert list(get_runtime().store.all_records()) == []
    assert table_is_empty()  # no idempotency key or customer lock either


def call_post(api: Api, route: str, headers: Mapping[str, str], body: bytes) -> Reply:
    name, method, path = SUBMIT if route == "submit" else ELIGIBILITY
    return api.call(name, method, path, body=body, headers=dict(headers))


def test_at_least_fifty_new_cases():
    assert len(POST_CASES) + len(BAD_IDS) >= 50
    assert len({case.id for case in POST_CASES}) == len(POST_CASES)


@pytest.mark.parametrize(("case", "route"), POST_PARAMS)
def test_malformed_post(api: Api, sandbox, case: Case, route: str):
    reply = call_post(api, route, case.headers, case.body)
    problem_checks(reply, case.status)
    nothing_happened(sandbox)


@pytest.mark.parametrize("request_id", BAD_IDS)
def test_malformed_request_id(api: Api, sandbox, request_id: str):
    reply = api.call(
        "get_product_upgrade_request",
        "GET",
        "product-upgrade-requests/x",
        route_params={"requestId": request_id},
    )
    problem_checks(reply, 400)
    nothing_happened(sandbox)


@pytest.mark.parametrize("upgrade_id", BAD_IDS)
def test_malformed_upgrade_id(api: Api, sandbox, upgrade_id: str):
    reply = api.call(
        "get_product_upgrade_status",
        "GET",
        "product-upgrades/x",
        route_params={"upgradeId": upgrade_id},
        params={"customerId": CUSTOMER},
    )
    problem_checks(reply, 400)
    nothing_happened(sandbox)


@pytest.mark.parametrize(
    "params",
    [{"customerId": bad} for bad in BAD_IDS]
    + [
        {"customerId": CUSTOMER, "productFamily": family}
        for family in ("", "Office", " azure", fullwidth("Azure"), "Azure\u200d", "Azure' or 1 eq 1", "a" * 5000)
    ],
    ids=lambda params: repr(params)[:60],
)
def test_malformed_status_query(api: Api, sandbox, params: dict[str, str]):
    reply = api.call(
        "get_product_upgrade_status",
        "GET",
        f"product-upgrades/{UPGRADE}",
        route_params={"upgradeId": UPGRADE},
        params=params,
    )
    problem_checks(reply, 400)
    nothing_happened(sandbox)


@pytest.mark.parametrize(
    ("function_name", "route_params", "params"),
    [
        ("get_product_upgrade_request", {"requestId": CUSTOMER}, {}),
        ("get_product_upgrade_status", {"upgradeId": UPGRADE}, {"customerId": CUSTOMER}),
    ],
)
@pytest.mark.parametrize("correlation", ["nope", "", fullwidth(CUSTOMER), CUSTOMER + "\r\nX: 1"])
def test_get_routes_check_the_correlation_header(api: Api, sandbox, function_name, route_params, params, correlation):
    reply = api.call(
        function_name,
        "GET",
        "x",
        route_params=route_params,
        params=params,
        headers={"MS-CorrelationId": correlation},
    )
    problem_checks(reply, 400)
    nothing_happened(sandbox)


@pytest.mark.parametrize("request_id", BAD_IDS)
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_malformed_callback_request_id(api: Api, sandbox, method: str, request_id: str):
    function_name = "put_product_upgrade_callback" if method == "PUT" else "delete_product_upgrade_callback"
    body = json.dumps({"url": "https://203.0.113.10/hook"}).encode() if method == "PUT" else b""
    reply = api.call(function_name, method, "x", body=body, headers=dict(JSON), route_params={"requestId": request_id})
    problem_checks(reply, 400)
    nothing_happened(sandbox)


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [(json.dumps({"url": url}).encode(), JSON, 400) for _, url in BAD_CALLBACK_URLS]
    + [
        (b"", JSON, 400),
        (b"{", JSON, 400),
        (b"{}", JSON, 400),
        (b'{"url": null}', JSON, 400),
        (b'{"url": "https://203.0.113.10/", "url": "https://203.0.113.11/"}', JSON, 400),
        (b'{"url": "https://203.0.113.10/", "secret": "x"}', JSON, 400),
        (b'{"url": "https://203.0.113.10/"}', {"Content-Type": "text/plain"}, 415),
        (b'{"url": "https://203.0.113.10/"}' + b" " * MAX_BODY, JSON, 413),
    ],
    ids=[name for name, _ in BAD_CALLBACK_URLS]
    + ["empty", "truncated", "no-url", "null-url", "duplicate-url", "extra-field", "text-plain", "too-large"],
)
def test_malformed_callback_subscription(api: Api, sandbox, body: bytes, headers, status: int):
    reply = api.call(
        "put_product_upgrade_callback",
        "PUT",
        "x",
        body=body,
        headers=dict(headers),
        route_params={"requestId": str(uuid.uuid4())},
    )
    problem_checks(reply, status)
    nothing_happened(sandbox)


def test_unknown_request_is_404_without_partner_center(api: Api, sandbox):
    reply = api.request_status(str(uuid.uuid4()).upper())
    problem_checks(reply, 404)
    nothing_happened(sandbox)


# --- the oracle: what the README promises for a request, written independently ---------------

HEX = frozenset("0123456789abcdefABCDEF")


def canonical_guid(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 36
        and all(value[i] == "-" for i in (8, 13, 18, 23))
        and all(c in HEX for i, c in enumerate(value) if i not in (8, 13, 18, 23))
    )


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise ValueError(name)


def expected_status(headers: Mapping[str, str], body: bytes, *, check_key: bool) -> int | None:
    """None if the request is a valid upgrade request, else the 4xx the app must answer."""
    lower = {name.lower(): value for name, value in headers.items()}
    for name in ("ms-correlationid", "x-ms-correlation-id"):
        if name in lower:
            if not canonical_guid(lower[name].strip()):
                return 400
            break
    media, _, parameters = lower.get("content-type", "").partition(";")
    charset = parameters.strip().lower().replace(" ", "")
    if media.strip().lower() != "application/json" or charset not in ("", "charset=utf-8", 'charset="utf-8"'):
        return 415
    if len(body) > MAX_BODY:
        return 413
    try:
        document = json.loads(body.decode("utf-8-sig"), object_pairs_hook=_strict_object, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return 400
    if not isinstance(document, dict) or not set(document) <= {"customerId", "productFamily"}:
        return 400
    if not canonical_guid(document.get("customerId")):
        return 400
    family = document.get("productFamily", "Azure")
    if not (isinstance(family, str) and family.isascii() and family.lower() == "azure"):
        return 400
    if check_key and "idempotency-key" in lower:
        key = lower["idempotency-key"].strip()
        if not (0 < len(key) <= 255 and key.isascii() and key.isprintable()):
            return 400
    return None


# --- strategies ----------------------------------------------------------------------------

LOOKALIKES = {
    **{
        d: [
            chr(0xFF10 + int(d)),
            chr(0x0660 + int(d)),
            chr(0x06F0 + int(d)),
            chr(0x0966 + int(d)),
            chr(0x1D7CE + int(d)),
        ]
        for d in "0123456789"
    },
    "a": ["\u0430", "\u03b1", "\uff41", "\u00e0"],
    "b": ["\u0184", "\uff42", "\u042c"],
    "c": ["\u0441", "\u03f2", "\uff43"],
    "d": ["\u0501", "\uff44"],
    "e": ["\u0435", "\uff45", "\u00e9"],
    "f": ["\u0192", "\uff46"],
    "-": ["\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2212", "\ufe63", "\uff0d", "\u00ad", "_", " "],
}
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u202e", "\u0301", "\u00a0", "\u3000", "\t", "\n", " "]
INJECTIONS = [
    "' or 1 eq 1 or '",
    "x' or PartitionKey ne '",
    "'; DROP TABLE t;--",
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "\r\nX-Injected: 1",
    "${jndi:ldap://127.0.0.1/a}",
    "{{7*7}}",
    "%s%n",
    "<img src=x onerror=alert(1)>",
    "\x00",
]

guids = st.uuids().map(str)


@st.composite
def near_miss_guids(draw: st.DrawFn) -> str:
    """A GUID broken in one way a human reader might not see."""
    value = draw(guids.map(lambda g: g.upper()) | guids)
    index = draw(st.integers(0, len(value) - 1))
    kind = draw(
        st.sampled_from(["lookalike", "invisible", "delete", "duplicate", "wrap", "nohyphen", "nonhex", "injection"])
    )
    if kind == "lookalike":
        candidates = [i for i, c in enumerate(value) if c.lower() in LOOKALIKES]
        index = candidates[index % len(candidates)]
        new = draw(st.sampled_from(LOOKALIKES[value[index].lower()]))
        return value[:index] + new + value[index + 1 :]
    if kind == "invisible":
        return value[:index] + draw(st.sampled_from(INVISIBLE)) + value[index:]
    if kind == "delete":
        return value[:index] + value[index + 1 :]
    if kind == "duplicate":
        return value[:index] + value[index] + value[index:]
    if kind == "wrap":
        left, right = draw(st.sampled_from([("{", "}"), ("(", ")"), ("urn:uuid:", ""), ('"', '"'), ("", "}")]))
        return left + value + right
    if kind == "nohyphen":
        return value.replace("-", "")
    if kind == "nonhex":
        return value[:index] + draw(st.sampled_from("ghijklmnopqrstuvwxyzGXZ!#")) + value[index + 1 :]
    return value + draw(st.sampled_from(INJECTIONS))


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=10,
)
bad_customer_ids = (
    near_miss_guids() | json_values.filter(lambda value: not canonical_guid(value)) | st.sampled_from(INJECTIONS)
)
bad_families = (
    st.text(max_size=20).filter(lambda text: not (text.isascii() and text.lower() == "azure"))
    | st.sampled_from(["Azure plan", " Azure", "Azure ", fullwidth("Azure"), "\u0410zure", "Az\u200dure", "azure\x00"])
    | st.none()
    | st.integers()
    | st.lists(st.just("Azure"), max_size=2)
)
# (callbackUrl is a field too; its values are hand-written below: a generated host would mean DNS)
extra_keys = st.text(min_size=0, max_size=15).filter(
    lambda key: key not in ("customerId", "productFamily", "callbackUrl")
)


@st.composite
def invalid_documents(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["bad-customer", "bad-family", "extra-key", "missing-customer", "not-object"]))
    customer = draw(guids)
    if kind == "bad-customer":
        document = {"customerId": draw(bad_customer_ids)}
        if draw(st.booleans()):
            document["productFamily"] = draw(st.sampled_from(["Azure", "azure"]) | bad_families)
        return document
    if kind == "bad-family":
        return {"customerId": customer, "productFamily": draw(bad_families)}
    if kind == "extra-key":
        document = {"customerId": customer, draw(extra_keys): draw(json_values)}
        if draw(st.booleans()):
            document["productFamily"] = "Azure"
        return document
    if kind == "missing-customer":
        return draw(
            st.dictionaries(
                st.sampled_from(["productFamily", "customerid", "CustomerId", "customer_id", "id"]),
                json_values,
                max_size=3,
            )
        )
    return draw(json_values.filter(lambda value: not isinstance(value, dict)))


def encode(document: Any, ensure_ascii: bool, compact: bool) -> bytes:
    separators = (",", ":") if compact else (", ", ": ")
    return json.dumps(document, ensure_ascii=ensure_ascii, separators=separators).encode("utf-8", "surrogatepass")


@st.composite
def byte_damage(draw: st.DrawFn, body: bytes) -> bytes:
    """Leave the bytes alone (mostly) or damage them the way broken clients and proxies do."""
    kind = draw(
        st.sampled_from(
            ["none"] * 6
            + ["utf16", "utf32", "latin1", "bom", "truncate", "garbage", "duplicate-key", "flip", "pad", "nest"]
        )
    )
    if kind == "none":
        return body
    text = body.decode("utf-8", "surrogatepass")
    if kind == "utf16":
        return text.encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-16-be"])), "surrogatepass")
    if kind == "utf32":
        return text.encode(draw(st.sampled_from(["utf-32", "utf-32-le", "utf-32-be"])), "surrogatepass")
    if kind == "latin1":
        return text.encode("latin-1", "replace") + b"\xe9"
    if kind == "bom":
        return (
            draw(st.sampled_from([b"\xef\xbb\xbf\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff"])) + body
        )
    if kind == "truncate":
        return body[: draw(st.integers(0, max(0, len(body) - 1)))]
    if kind == "garbage":
        return body + draw(st.binary(min_size=1, max_size=16))
    if kind == "duplicate-key":
        key = draw(st.sampled_from(["customerId", "productFamily"]))
        return b'{"%s": "x", ' % key.encode() + body.lstrip()[1:] if body.lstrip().startswith(b"{") else body + b"}"
    if kind == "flip":
        if not body:
            return b"\xff"
        index = draw(st.integers(0, len(body) - 1))
        return body[:index] + bytes([body[index] ^ draw(st.integers(1, 255))]) + body[index + 1 :]
    if kind == "pad":
        return body + b" " * draw(st.integers(MAX_BODY - len(body) + 1, MAX_BODY * 2))
    depth = draw(st.integers(900, 2000))
    return b"[" * depth + body + b"]" * depth


valid_content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON; Charset=UTF-8",
        'application/json; charset="utf-8"',
    ]
)
invalid_content_types = st.sampled_from(
    [
        "",
        "text/plain",
        "application/json; charset=utf-16",
        "application/json; charset=utf8",
        "application/x-www-form-urlencoded",
        "application/json-patch+json",
        "application/json\r\nX: 1",
        "application/json; boundary=x",
    ]
) | st.text(max_size=40)
# Mostly a valid Content-Type, so that the body (not the header) decides most examples.
content_types = st.sampled_from([True] * 8 + [False] * 2).flatmap(
    lambda valid: valid_content_types if valid else invalid_content_types
)
bad_header_values = st.one_of(
    st.just(""),
    st.text(max_size=60),
    near_miss_guids(),
    st.sampled_from(INJECTIONS),
    st.text(min_size=256, max_size=400),
)
valid_keys = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60)


@st.composite
def header_sets(draw: st.DrawFn, content_type: st.SearchStrategy[str] = content_types) -> dict[str, str]:
    headers = {"Content-Type": draw(content_type)} if draw(st.sampled_from([True] * 19 + [False])) else {}
    correlation = draw(st.sampled_from(["none"] * 14 + ["valid", "valid", "invalid", "x-invalid"]))
    if correlation == "valid":
        headers["MS-CorrelationId"] = draw(guids)
    elif correlation == "invalid":
        headers["MS-CorrelationId"] = draw(bad_header_values)
    elif correlation == "x-invalid":
        headers["x-ms-correlation-id"] = draw(bad_header_values)
    key = draw(st.sampled_from(["none"] * 14 + ["valid", "valid", "valid", "invalid", "invalid"]))
    if key == "valid":
        headers["Idempotency-Key"] = "fuzz-" + draw(valid_keys) + "-" + uuid.uuid4().hex
    elif key == "invalid":
        headers["Idempotency-Key"] = draw(
            bad_header_values.filter(
                lambda value: not (0 < len(value.strip()) <= 255 and value.isascii() and value.isprintable())
            )
        )
    if draw(st.booleans()):
        headers["Prefer"] = draw(st.sampled_from(["respond-async", "return=minimal", "respond-async, wait=5"]))
    return headers


@st.composite
def invalid_requests(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    """(headers, body) for the upgrade POST that is not a valid request, by the oracle."""
    if draw(st.integers(0, 4)):
        body = encode(draw(invalid_documents()), draw(st.booleans()), draw(st.booleans()))
    else:  # a valid document, broken on the way
        valid = {"customerId": draw(guids), "productFamily": "Azure"}
        body = encode(valid, draw(st.booleans()), draw(st.booleans()))
    body = draw(byte_damage(body))
    headers = draw(header_sets())
    return headers, body


# --- the properties ------------------------------------------------------------------------

FUZZ_SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}


def run_property(strategy: st.SearchStrategy[Any], check, *, examples: int, derandomize: bool) -> int:
    """Run `check` on `examples` generated values (those it declines do not count); how many it checked."""
    checked = Counter()

    @settings(max_examples=examples, derandomize=derandomize, **FUZZ_SETTINGS)
    @given(strategy)
    def prop(value: Any) -> None:
        applies = check(value)
        assume(applies)
        checked["examples"] += 1

    prop()
    print(f"hypothesis: {checked['examples']} examples checked (max_examples={examples})")
    assert checked["examples"] >= examples
    return checked["examples"]


@pytest.fixture
def fresh_api(api: Api, sandbox) -> Api:
    get_runtime()  # the table exists, so "empty" means empty
    assert sandbox.calls() == []
    return api


def invalid_post_checker(api: Api, sandbox):
    def check(request: tuple[dict[str, str], bytes]) -> bool:
        """Both POST routes answer the oracle's 4xx; False (not checked) if the example is valid."""
        headers, body = request
        submit_status = expected_status(headers, body, check_key=True)
        if submit_status is None:
            return False
        problem_checks(call_post(api, "submit", headers, body), submit_status)
        eligibility_status = expected_status(headers, body, check_key=False)
        if eligibility_status is not None:  # (eligibility ignores Idempotency-Key)
            problem_checks(call_post(api, "eligibility", headers, body), eligibility_status)
        assert sandbox.calls() == []
        assert table_is_empty()
        return True

    return check


def test_generated_invalid_requests_are_4xx(fresh_api: Api, sandbox):
    run_property(invalid_requests(), invalid_post_checker(fresh_api, sandbox), examples=300, derandomize=True)


@pytest.mark.slow
def test_generated_invalid_requests_are_4xx_long(fresh_api: Api, sandbox):
    run_property(invalid_requests(), invalid_post_checker(fresh_api, sandbox), examples=10_000, derandomize=False)


route_texts = st.one_of(st.text(max_size=60), near_miss_guids(), st.sampled_from(INJECTIONS + BAD_IDS))


@st.composite
def invalid_get_requests(draw: st.DrawFn) -> tuple[str, dict[str, str], dict[str, str], dict[str, str]]:
    """(function, route params, query, headers) for a GET route with at least one bad part."""
    headers = {}
    if draw(st.integers(0, 3)) == 0:
        headers["MS-CorrelationId"] = draw(bad_header_values)
    if draw(st.booleans()):
        return "get_product_upgrade_request", {"requestId": draw(route_texts | guids)}, {}, headers
    params = {"customerId": draw(route_texts | guids)}
    if draw(st.booleans()):
        params["productFamily"] = draw(bad_families.filter(lambda v: isinstance(v, str)) | st.just("azure"))
    return "get_product_upgrade_status", {"upgradeId": draw(route_texts | guids)}, params, headers


def get_expected(request: tuple[str, dict[str, str], dict[str, str], dict[str, str]]) -> int | None:
    function_name, route_params, params, headers = request
    if "MS-CorrelationId" in headers and not canonical_guid(headers["MS-CorrelationId"].strip()):
        return 400
    if function_name == "get_product_upgrade_request":
        return 404 if canonical_guid(route_params["requestId"]) else 400  # no such request: 404 from the store
    family = params.get("productFamily", "Azure")
    valid = (
        canonical_guid(route_params["upgradeId"])
        and canonical_guid(params["customerId"])
        and family.isascii()
        and family.lower() == "azure"
    )
    return None if valid else 400


def invalid_get_checker(api: Api, sandbox):
    def check(request) -> bool:
        status = get_expected(request)
        if status is None:
            return False  # a valid status query: it would go to Partner Center
        function_name, route_params, params, headers = request
        reply = api.call(function_name, "GET", "x", route_params=route_params, params=params, headers=headers)
        problem_checks(reply, status)
        assert sandbox.calls() == []
        assert table_is_empty()
        return True

    return check


def test_generated_invalid_gets_are_4xx(fresh_api: Api, sandbox):
    run_property(invalid_get_requests(), invalid_get_checker(fresh_api, sandbox), examples=100, derandomize=True)


@pytest.mark.slow
def test_generated_invalid_gets_are_4xx_long(fresh_api: Api, sandbox):
    run_property(invalid_get_requests(), invalid_get_checker(fresh_api, sandbox), examples=3_000, derandomize=False)


# --- valid requests are accepted -----------------------------------------------------------


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    """(customer, headers, body): a valid queued request, spelled in one of the ways JSON and HTTP allow.

    The customer is a fresh uuid4 each time (one active request per customer: a repeat would be
    a replay); what is generated is how it is written.
    """
    customer = str(uuid.uuid4())
    cased = "".join(c.upper() if draw(st.booleans()) else c for c in customer) if draw(st.booleans()) else customer
    if draw(st.booleans()):  # JSON \u escapes for some characters
        customer_json = '"' + "".join(f"\\u{ord(c):04x}" if draw(st.integers(0, 3)) == 0 else c for c in cased) + '"'
    else:
        customer_json = json.dumps(cased)
    members = [f'"customerId"{draw(st.sampled_from([":", " : ", ":  "]))}{customer_json}']
    if draw(st.booleans()):
        family = "".join(c.upper() if draw(st.booleans()) else c for c in "azure")
        members.append(f'"productFamily":{json.dumps(family)}')
    if draw(st.booleans()):
        members.reverse()
    space = draw(st.sampled_from(["", " ", "\n", "\t", "\r\n  "]))
    body = ("{" + space + ("," + space).join(members) + space + "}").encode()
    if draw(st.booleans()):
        body = b"\xef\xbb\xbf" + body
    if draw(st.integers(0, 4)) == 0:
        body += b" " * draw(st.integers(0, MAX_BODY - len(body)))
    content_type = draw(
        st.sampled_from(
            [
                "application/json",
                "application/json; charset=utf-8",
                "Application/Json;charset=UTF-8",
                'application/json; charset="utf-8"',
                " application/json ; charset = utf-8",
            ]
        )
    )
    headers = {draw(st.sampled_from(["Content-Type", "content-type", "CONTENT-TYPE"])): content_type}
    headers["Prefer"] = draw(st.sampled_from(["respond-async", "Respond-Async", "return=minimal, respond-async"]))
    correlation = draw(st.sampled_from(["none", "ms", "x"]))
    if correlation != "none":
        value = str(uuid.uuid4())
        value = value.upper() if draw(st.booleans()) else value
        padded = draw(st.sampled_from(["", " ", "\t"])) + value + draw(st.sampled_from(["", " "]))
        headers["MS-CorrelationId" if correlation == "ms" else "x-ms-correlation-id"] = padded
    if draw(st.booleans()):
        headers["Idempotency-Key"] = " " + draw(valid_keys) + "-" + uuid.uuid4().hex + " "
    return customer, headers, body


def valid_queued_checker(api: Api, sandbox):
    def check(request: tuple[str, dict[str, str], bytes]) -> bool:
        customer, headers, body = request
        assert expected_status(headers, body, check_key=True) is None
        reply = call_post(api, "submit", headers, body)
        assert reply.status == 202, reply.body[:300]
        accepted = reply.json()
        assert accepted["status"] == "pending" and accepted["queued"] is True
        assert accepted["customerId"] == customer and accepted["productFamily"] == "Azure"
        assert reply.headers["location"].endswith(accepted["requestId"])
        correlation = next((v for k, v in headers.items() if "correlation" in k.lower()), None)
        if correlation:
            assert accepted["correlationId"] == correlation.strip().lower()
        stored = get_runtime().store.get(accepted["requestId"])
        assert stored is not None and stored.record.customer_id == customer and stored.record.state == "pending"
        assert sandbox.calls("partner_center") == []
        return True

    return check


def test_generated_valid_requests_are_queued(fresh_api: Api, sandbox):
    run_property(valid_requests(), valid_queued_checker(fresh_api, sandbox), examples=40, derandomize=True)


@pytest.mark.slow
def test_generated_valid_requests_are_queued_long(fresh_api: Api, sandbox):
    run_property(valid_requests(), valid_queued_checker(fresh_api, sandbox), examples=1_000, derandomize=False)


def valid_inline_checker(api: Api, sandbox):
    def check(request: tuple[str, dict[str, str], bytes]) -> bool:
        customer, headers, body = request
        headers = {name: value for name, value in headers.items() if name != "Prefer"}
        reply = call_post(api, "submit", headers, body)
        assert reply.status == 202, reply.body[:300]
        accepted = reply.json()
        assert accepted["status"] == "submitted" and accepted["outcome"] == "created"
        assert [accepted["upgradeId"]] == sandbox.upgrade_ids(customer)
        assert sandbox.submissions(customer) == 1
        eligibility = call_post(api, "eligibility", {**headers, "Idempotency-Key": "ignored"}, body)
        assert eligibility.status == 200
        assert eligibility.json()["upgradeId"] == accepted["upgradeId"]
        return True

    return check


def test_generated_valid_requests_are_submitted(fresh_api: Api, sandbox):
    run_property(valid_requests(), valid_inline_checker(fresh_api, sandbox), examples=10, derandomize=True)


@pytest.mark.slow
def test_generated_valid_requests_are_submitted_long(fresh_api: Api, sandbox):
    run_property(valid_requests(), valid_inline_checker(fresh_api, sandbox), examples=200, derandomize=False)
