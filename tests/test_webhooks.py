"""Completion callbacks, signed inbound webhooks and the async request-reply pattern."""

from __future__ import annotations

import json
import socket
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from shared.runtime import get_runtime, reset_runtime
from shared.upgrade_requests.record import utc_now
from shared.webhooks.callback_urls import CallbackUrlRefused, check_callback_url, is_public

from .conftest import Api, new_secret
from .test_requests import make_due, record, run_timer
from .webhook_receiver import Receiver

PUBLIC = "https://hooks.example.com/x"


@pytest.fixture
def signing_secret(app_env, sandbox, monkeypatch) -> str:
    secret = new_secret()
    sandbox.set_secret("webhook-signing-secret", secret)
    monkeypatch.setenv("CALLBACK_ALLOW_PRIVATE_NETWORKS", "true")  # the receiver is on loopback
    reset_runtime()
    return secret


def make_callback_due(request_id: str) -> None:
    store = get_runtime().store
    stored = store.get(request_id)
    store.replace(replace(stored.record, callback_next_at=utc_now() - timedelta(seconds=1)), stored.etag)


def test_callback_is_delivered_once_signed_when_final(api: Api, sandbox, signing_secret, customer_id):
    sandbox.customers.set(customer_id, polls_until_final=1)
    with Receiver() as receiver:
        reply = api.upgrade(customer_id, callback_url=receiver.url)
        assert reply.status == 202
        request_id = reply.json()["requestId"]
        assert receiver.deliveries == []
        make_due(request_id)
        run_timer()
        assert len(receiver.deliveries) == 1
        delivery = receiver.deliveries[0]
        event = Webhook(signing_secret).verify(delivery.body, delivery.headers)
        assert event["type"] == "product-upgrade.completed"
        assert event["data"]["requestId"] == request_id
        assert event["data"]["status"] == "complete"
        assert event["data"]["upgradeId"] == sandbox.upgrade_ids(customer_id)[0]
        run_timer()
        make_callback_due(request_id)
        run_timer()
        assert len(receiver.deliveries) == 1  # delivered is final: never sent again as new
    after = record(request_id)
    assert after.callback_state == "delivered"
    assert after.callback_attempts == 1


def test_callback_is_retried_after_a_receiver_500_with_the_same_webhook_id(api: Api, sandbox, signing_secret):
    customer = str(uuid.uuid4())
    sandbox.customers.set(customer, eligible=False, reason="No Azure subscriptions")
    with Receiver(statuses=[500]) as receiver:
        reply = api.upgrade(customer, callback_url=receiver.url)
        assert reply.status == 422  # rejected at once: final, so the HTTP path delivers right away
        request_id = reply.json()["requestId"]
        assert len(receiver.deliveries) == 1
        pending = record(request_id)
        assert pending.callback_state == "pending"
        assert pending.callback_last_error == "receiver answered HTTP 500"
        make_callback_due(request_id)
        run_timer()
        assert len(receiver.deliveries) == 2
        first, second = receiver.deliveries
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert Webhook(signing_secret).verify(second.body, second.headers)["type"] == "product-upgrade.rejected"
    assert record(request_id).callback_state == "delivered"


def test_subscribe_to_a_final_request_delivers_now_and_unsubscribe_stops_delivery(api: Api, sandbox, signing_secret):
    done, waiting = str(uuid.uuid4()), str(uuid.uuid4())
    sandbox.customers.set(done, polls_until_final=1)
    with Receiver() as receiver:
        done_id = api.upgrade(done).json()["requestId"]
        assert api.request_status(done_id).json()["status"] == "complete"
        reply = api.call(
            "put_product_upgrade_callback",
            "PUT",
            f"product-upgrade-requests/{done_id}/callback",
            route_params={"requestId": done_id},
            json_body={"url": receiver.url},
        )
        assert reply.status == 200
        assert reply.json()["callback"]["state"] == "delivered"
        assert len(receiver.deliveries) == 1

        sandbox.customers.set(waiting, polls_until_final=1)
        waiting_id = api.upgrade(waiting, callback_url=receiver.url).json()["requestId"]
        removed = api.call(
            "delete_product_upgrade_callback",
            "DELETE",
            f"product-upgrade-requests/{waiting_id}/callback",
            route_params={"requestId": waiting_id},
        )
        assert removed.status == 204
        make_due(waiting_id)
        run_timer()
        assert record(waiting_id).state == "complete"
        assert len(receiver.deliveries) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # not https
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://10.1.2.3/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/metadata",  # cloud metadata endpoint
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:100.64.0.1]/hook",  # IPv4-mapped shared address space (carrier-grade NAT)
        "https://[::ffff:224.0.0.1]/hook",  # IPv4-mapped multicast
        "https://[::ffff:169.254.169.254]/metadata",  # IPv4-mapped cloud metadata endpoint
        "https://user:pass@hooks.example.com/x",
        "ftp://hooks.example.com/x",
        "https:///nohost",
    ],
)
def test_private_loopback_and_non_https_callbacks_are_refused_by_default(api: Api, sandbox, url, customer_id):
    reply = api.upgrade(customer_id, callback_url=url)
    assert reply.status == 400
    assert reply.json()["type"].endswith("callback-url-refused")
    assert sandbox.calls("partner_center") == []
    assert list(get_runtime().store.all_records()) == []


def test_delivery_rechecks_the_url_and_never_sends_to_loopback(api: Api, sandbox, signing_secret, monkeypatch):
    customer = str(uuid.uuid4())
    sandbox.customers.set(customer, polls_until_final=1)
    with Receiver() as receiver:
        request_id = api.upgrade(customer, callback_url=receiver.url).json()["requestId"]
        monkeypatch.setenv("CALLBACK_ALLOW_PRIVATE_NETWORKS", "false")  # production setting
        reset_runtime()
        make_due(request_id)
        run_timer()
        assert receiver.deliveries == []
    after = record(request_id)
    assert after.state == "complete"
    assert after.callback_state == "failed"
    assert "https" in after.callback_last_error


def test_public_address_classification():
    assert is_public("8.8.8.8")
    assert is_public("2606:4700:4700::1111")
    assert is_public("::ffff:8.8.8.8")  # IPv4-mapped: judged as the IPv4 address it carries
    for address in (
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "::1",
        "fc00::1",
        "fe80::1",
        "0.0.0.0",  # noqa: S104 - an address under test, not a bind
        "224.0.0.1",
        "100.64.0.1",
        "::ffff:10.0.0.1",
        # IPv4-mapped addresses that Python's IPv6 rules alone call global: only the unwrap to the
        # IPv4 address refuses them (shared address space, multicast, link-local, loopback).
        "::ffff:100.64.0.1",
        "::ffff:224.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:127.0.0.1",
        "::ffff:0.0.0.0",
    ):
        assert not is_public(address), address
    with pytest.raises(CallbackUrlRefused):
        check_callback_url("https://does-not-resolve.invalid/x", allow_private_networks=False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://8.8.8.8/hook", "must use https"),
        ("https://user:pass@8.8.8.8/hook", "no user info"),
        ("https://user@8.8.8.8/hook", "no user info"),
        ("https://:pass@8.8.8.8/hook", "no user info"),
        ("https://8.8.8.8/hook#fragment", "no user info, percent-encoding or fragment"),
        ("https://8.8.8.8:99999/hook", "invalid port"),
        ("https://8.8.8.8/" + "x" * 2048, "at most 2048"),
    ],
)
def test_callback_url_rules_apply_to_a_public_host_too(url, reason):
    """A public literal address needs no DNS: each refusal below is for its own rule, not because a
    name did not resolve (which would hide a broken rule)."""
    with pytest.raises(CallbackUrlRefused, match=reason):
        check_callback_url(url, allow_private_networks=False)


@pytest.mark.parametrize("url", ["https://8.8.8.8/hook", "https://[2606:4700:4700::1111]:8443/hook?x=1"])
def test_public_literal_callback_urls_are_allowed(url):
    assert check_callback_url(url, allow_private_networks=False) == url


def test_every_resolved_address_must_be_public(monkeypatch):
    """A host with one public and one private address (DNS rebinding) is refused: all are checked."""
    answers = {
        "mixed.example.com": ["8.8.8.8", "10.0.0.1"],
        "mixed6.example.com": ["2606:4700:4700::1111", "::ffff:100.64.0.1"],
        "public.example.com": ["8.8.8.8", "2606:4700:4700::1111"],
    }

    def getaddrinfo(host, port, *args, **kwargs):  # the resolver is the network edge
        family = {True: socket.AF_INET6, False: socket.AF_INET}
        return [(family[":" in a], socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for host in ("mixed.example.com", "mixed6.example.com"):
        with pytest.raises(CallbackUrlRefused):
            check_callback_url(f"https://{host}/hook", allow_private_networks=False)
    assert check_callback_url("https://public.example.com/hook", allow_private_networks=False)


# --- signed inbound webhooks ---


def signed(secret: str, body: bytes, *, msg_id: str | None = None, at: datetime | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
    }


def post_raw(api: Api, body: bytes, headers: dict[str, str]):
    return api.call("submit_product_upgrade", "POST", "product-upgrades", body=body, headers=headers)


def test_signed_inbound_request_is_accepted_and_replays_are_idempotent(api: Api, sandbox, inbound_secret, customer_id):
    body = json.dumps({"customerId": customer_id}).encode()
    headers = signed(inbound_secret, body)
    first = post_raw(api, body, headers)
    assert first.status == 202
    assert first.json()["requestedBy"] == {
        "kind": "application",
        "objectId": None,
        "appId": None,
        "displayName": None,
        "tenantId": None,
        "authMethod": "signed-webhook",
    }
    again = post_raw(api, body, headers)  # the sender retried the same delivery
    assert again.json()["requestId"] == first.json()["requestId"]
    assert sandbox.submissions(customer_id) == 1


@pytest.mark.parametrize("case", ["missing", "wrong-secret", "tampered-body", "garbage-signature", "old", "future"])
def test_bad_inbound_signatures_are_401_and_send_nothing(api: Api, sandbox, inbound_secret, customer_id, case):
    body = json.dumps({"customerId": customer_id}).encode()
    headers = signed(inbound_secret, body)
    if case == "missing":
        del headers["webhook-signature"]
    elif case == "wrong-secret":
        headers = signed(new_secret(), body)
    elif case == "tampered-body":
        body = json.dumps({"customerId": str(uuid.uuid4())}).encode()
    elif case == "garbage-signature":
        headers["webhook-signature"] = "v1,not base64!! v2"
    elif case == "old":
        headers = signed(inbound_secret, body, at=datetime.now(UTC) - timedelta(minutes=10))
    elif case == "future":
        headers = signed(inbound_secret, body, at=datetime.now(UTC) + timedelta(minutes=10))
    reply = post_raw(api, body, headers)
    assert reply.status == 401
    assert reply.content_type.startswith("application/problem+json")
    if case in ("old", "future"):
        assert "timestamp" in reply.json()["detail"]
    assert sandbox.calls("partner_center") == []
    assert list(get_runtime().store.all_records()) == []


# --- the asynchronous request-reply pattern, followed like Power Automate's HTTP action ---


def follow_async_pattern(api: Api, first, on_wait, max_polls: int = 10):
    """What the HTTP action does: on 202 with Location, wait Retry-After, GET Location, repeat."""
    reply, waits = first, []
    while reply.status == 202 and len(waits) < max_polls:
        location = reply.headers["location"]
        waits.append(int(reply.headers["retry-after"]))
        on_wait()
        request_id = location.rstrip("/").rsplit("/", 1)[-1]
        reply = api.request_status(request_id)
    return reply, waits


def test_async_pattern_reaches_the_final_record_without_a_loop(api: Api, sandbox, customer_id):
    sandbox.customers.set(customer_id, polls_until_final=3)
    first = api.upgrade(customer_id)
    assert first.status == 202
    final, waits = follow_async_pattern(api, first, on_wait=lambda: None)
    assert final.status == 200
    assert final.json()["status"] == "complete"
    assert final.json()["upgradeId"] == first.json()["upgradeId"]
    assert all(wait >= 1 for wait in waits)


def test_async_pattern_on_a_queued_request_follows_the_timer(api: Api, sandbox, customer_id):
    sandbox.customers.set(customer_id, polls_until_final=1)
    first = api.upgrade(customer_id, headers={"Prefer": "respond-async"})
    request_id = first.json()["requestId"]

    def time_passes():
        make_due(request_id)
        run_timer()

    final, waits = follow_async_pattern(api, first, on_wait=time_passes)
    assert final.status == 200
    assert final.json()["status"] == "complete"
    assert len(waits) >= 1
