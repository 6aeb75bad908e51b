"""The callback sender under attack and faults: DNS rebinding, tricksy URLs, a trickling
receiver, a temporary DNS failure (issue 14, defects 2, 4 and 7)."""

from __future__ import annotations

import base64
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from shared.upgrade_requests.record import COMPLETE, new_record
from shared.webhooks.callback_urls import CallbackUrlRefused, check_callback_url, is_public
from shared.webhooks.callbacks import CallbackPolicy, CallbackSender

from .conftest import Api

PUBLIC_ADDRESS = "93.184.215.14"  # a public address; nothing answers it here (no internet)


class _Secrets:
    """Key Vault is not the point here: the signing secret, as `SecretStore.get` returns it."""

    value = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()

    def get(self, name: str, *, fresh: bool = False) -> str:
        return self.value


def final_record(url: str):
    return new_record(
        str(uuid.uuid4()), str(uuid.uuid4()), "Azure", str(uuid.uuid4()), str(uuid.uuid4()), state=COMPLETE,
        callback_url=url,
    )  # fmt: skip


def sender(*, allow_private_networks: bool = False) -> CallbackSender:
    policy = CallbackPolicy("webhook-signing-secret", allow_private_networks=allow_private_networks, max_attempts=5)
    return CallbackSender(_Secrets(), policy)  # type: ignore[arg-type]


class LoopbackListener:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts (and says nothing)."""

    def __init__(self) -> None:
        self.accepted = 0
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


@pytest.fixture
def listener() -> Iterator[LoopbackListener]:
    running = LoopbackListener()
    yield running
    running.close()


def rebinding_resolver(monkeypatch: pytest.MonkeyPatch, host: str, answers: list[str]) -> list[str]:
    """`socket.getaddrinfo` (the network edge) answering `host` with each address in turn, TTL 0:
    the last one forever. Returns the list of addresses handed out."""
    real = socket.getaddrinfo
    handed: list[str] = []

    def resolve(name: str, port: object, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if name != host:
            return real(name, port, *args, **kwargs)  # type: ignore[arg-type]
        address = answers[min(len(handed), len(answers) - 1)]
        handed.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 443)))]  # type: ignore[call-overload]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return handed


def test_dns_rebinding_never_reaches_a_loopback_server(monkeypatch, listener: LoopbackListener):
    host = "hooks.rebind.example"
    handed = rebinding_resolver(monkeypatch, host, [PUBLIC_ADDRESS, "127.0.0.1"])
    monkeypatch.setenv("HTTP_DEADLINE_SECONDS", "5")
    result = sender().deliver(final_record(f"https://{host}:{listener.port}/hook"))
    assert handed, "the resolver was asked"
    assert listener.accepted == 0, "a rebinding answer made the callback connect to loopback"
    assert result.callback_state == "pending"  # the public address did not answer: retried later


def test_delivery_errors_do_not_tell_internal_ports_apart(listener: LoopbackListener):
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    open_not_tls = sender(allow_private_networks=True).deliver(final_record(f"https://127.0.0.1:{listener.port}/x"))
    nothing = sender(allow_private_networks=True).deliver(final_record(f"https://127.0.0.1:{closed_port}/x"))
    assert open_not_tls.callback_last_error == nothing.callback_last_error


def test_a_temporary_dns_failure_is_retried_not_final(monkeypatch):
    def no_answer(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_answer)
    result = sender().deliver(final_record("https://hooks.example.com/x"))
    assert result.callback_state == "pending"
    assert result.callback_next_at is not None
    assert result.callback_attempts == 1


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 (RFC 8215) of 169.254.169.254
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
        "::ffff:10.0.0.1",
        "::127.0.0.1",  # IPv4-compatible (deprecated)
        "fe80::1%eth0",
    ],
)
def test_ipv6_forms_that_embed_a_private_ipv4_are_not_public(address: str):
    assert not is_public(address)


@pytest.mark.parametrize("address", ["fec0::1", "feff::1"])
def test_ipv6_site_local_is_not_public(address: str):
    """fec0::/10 (deprecated site-local, RFC 3879) routes like a private network where it is still used;
    Python's `is_global` calls it global."""
    assert not is_public(address)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com\\@127.0.0.1/x",  # backslash: browsers and Python split differently
        "https://127.0.0.1\\@hooks.example.com/x",
        "https://hooks.example.com%2f@127.0.0.1/x",
        "https://hooks%2eexample.com/x",  # percent-encoded host
        "https://hooks.example.com /x",  # whitespace
        "https://hooks.example.com\t/x",
        " https://hooks.example.com/x",
        "https://@hooks.example.com/x",  # empty userinfo
        "https://hooks.example.com:0/x",
        "https://hooks.example.com:99999/x",
        "https://0x7f.1/x",  # numeric forms inet_aton reads as 127.0.0.1
        "https://2130706433/x",
        "https://017700000001/x",
        "https://127.1/x",
    ],
)
def test_url_forms_that_parsers_read_differently_are_refused(url: str, monkeypatch):
    rebinding_resolver(monkeypatch, "hooks.example.com", [PUBLIC_ADDRESS])
    with pytest.raises(CallbackUrlRefused):
        check_callback_url(url, allow_private_networks=False)


def test_a_plain_public_url_still_passes(monkeypatch):
    rebinding_resolver(monkeypatch, "hooks.example.com", [PUBLIC_ADDRESS])
    assert check_callback_url("https://hooks.example.com/x?a=1", allow_private_networks=False)


class TricklingReceiver:
    """A receiver that answers one byte every `interval` seconds for `seconds` (defect 4)."""

    def __init__(self, interval: float = 2.0, seconds: float = 14.0) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/hook"
        self._interval, self._seconds = interval, seconds
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self._socket.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
        ends = time.monotonic() + self._seconds
        try:
            for byte in answer:
                if self._stop.is_set() or time.monotonic() > ends:
                    break
                connection.sendall(bytes([byte]))
                time.sleep(self._interval)
        except OSError:
            pass
        finally:
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._socket.close()


def test_a_trickling_receiver_cannot_hold_put_callback_past_the_deadline(api: Api, sandbox, app_env, monkeypatch):
    from standardwebhooks.webhooks import Webhook  # noqa: F401  (the sender's library is installed)

    from shared.runtime import reset_runtime

    sandbox.set_secret("webhook-signing-secret", _Secrets.value)
    monkeypatch.setenv("CALLBACK_ALLOW_PRIVATE_NETWORKS", "true")
    monkeypatch.setenv("HTTP_DEADLINE_SECONDS", "5")
    reset_runtime()
    customer = str(uuid.uuid4())
    sandbox.customers.set(customer, eligible=False, reason="No Azure subscriptions")
    request_id = api.upgrade(customer).json()["requestId"]  # rejected at once: final
    receiver = TricklingReceiver(interval=1.0, seconds=14.0)
    try:
        started = time.monotonic()
        reply = api.call(
            "put_product_upgrade_callback",
            "PUT",
            f"product-upgrade-requests/{request_id}/callback",
            route_params={"requestId": request_id},
            json_body={"url": receiver.url},
        )
        elapsed = time.monotonic() - started
    finally:
        receiver.close()
    assert reply.status == 200
    assert elapsed < 5.0, f"PUT .../callback took {elapsed:.1f} s with HTTP_DEADLINE_SECONDS=5"
    assert reply.json()["callback"]["state"] == "pending"  # delivery left for the timer to retry


class TlsReceiver:
    """An HTTPS receiver on 127.0.0.1 with a certificate for `cert_name` (from its own CA): records
    the SNI name and Host header of each delivery."""

    def __init__(self, cert_name: str) -> None:
        import ssl
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import trustme

        self.ca = trustme.CA()
        self.server_names: list[str | None] = []
        self.hosts: list[str | None] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.hosts.append(self.headers.get("Host"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(cert_name).configure_cert(context)
        context.sni_callback = lambda sock, name, ctx: self.server_names.append(name)  # type: ignore[assignment, func-returns-value]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.mark.parametrize("cert_name", ["hooks.pinned.test", "someone-else.test"])
def test_delivery_goes_to_the_checked_address_with_the_name_for_tls_and_host(monkeypatch, tmp_path, cert_name: str):
    import requests.adapters

    receiver = TlsReceiver(cert_name)
    try:
        bundle = tmp_path / "ca.pem"
        receiver.ca.cert_pem.write_to_path(str(bundle))
        # The callback sender trusts only the default bundle (trust_env=False: no REQUESTS_CA_BUNDLE);
        # here the default bundle is the receiver's CA.
        monkeypatch.setattr(requests.adapters, "DEFAULT_CA_BUNDLE_PATH", str(bundle))
        handed = rebinding_resolver(monkeypatch, "hooks.pinned.test", ["127.0.0.1"])
        result = sender(allow_private_networks=True).deliver(
            final_record(f"https://hooks.pinned.test:{receiver.port}/hook")
        )
    finally:
        receiver.close()
    assert len(handed) == 1, "the host was resolved again after the check"
    assert receiver.server_names[:1] == ["hooks.pinned.test"]  # SNI: the name, not the address
    if cert_name == "hooks.pinned.test":
        assert result.callback_state == "delivered"
        assert receiver.hosts == [f"hooks.pinned.test:{receiver.port}"]
    else:  # the certificate is checked against the name: a wrong one is a failed delivery
        assert result.callback_state == "pending"
        assert receiver.hosts == []
