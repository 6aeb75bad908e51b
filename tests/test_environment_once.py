"""Proxy and CA settings from the environment are read once, when a client is built.

requests re-reads every proxy variable on every call while `trust_env` is on (measured by the
benchmark: 0.6 ms of CPU per storage call with 46 variables, 1.4 ms with 196, a Function app's
usual count). The Table Storage, Key Vault and Partner Center sessions each talk to one host, so
their settings are read for that host at build time with requests' own rules (HTTP(S)_PROXY,
NO_PROXY, REQUESTS_CA_BUNDLE) and never again. The host restarts the worker when app settings
change, so "at build time" is "at start-up".
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator

import pytest

from sandbox import Sandbox
from sandbox.azurite import Azurite
from shared.errors import StorageUnavailable
from shared.partner_center.client import PartnerCenterClient
from shared.settings import StorageTarget
from shared.upgrade_requests.store import build_request_store

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy")


class RecordingProxy:
    """A loopback 'proxy' that records each request line it gets and answers 502."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self.request_lines: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.request_lines.append(data.split(b"\r\n", 1)[0].decode("latin-1"))
                connection.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProxy]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    running = RecordingProxy()
    yield running
    running.close()


def _table() -> str:
    return "t" + uuid.uuid4().hex[:20]


def test_storage_goes_through_the_proxy_the_environment_names_at_build(
    azurite: Azurite, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with pytest.raises(StorageUnavailable):
        build_request_store(StorageTarget(azurite.connection_string, None, None), _table())
    assert proxy.request_lines, "the storage client ignored HTTP_PROXY"
    assert proxy.request_lines[0].startswith("POST http://127.0.0.1:")  # absolute URI: a proxied request


def test_storage_honours_no_proxy(azurite: Azurite, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    store = build_request_store(StorageTarget(azurite.connection_string, None, None), _table())
    assert store.get(str(uuid.uuid4())) is None
    assert proxy.request_lines == []


def test_storage_reads_the_environment_once(
    azurite: Azurite, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = build_request_store(StorageTarget(azurite.connection_string, None, None), _table())
    monkeypatch.setenv("HTTP_PROXY", proxy.url)  # after the build: not read per call
    assert store.get(str(uuid.uuid4())) is None
    assert proxy.request_lines == [], "a storage call re-read the proxy variables"


def test_partner_center_goes_through_the_proxy_and_reads_the_environment_once(
    sandbox: Sandbox, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    def client() -> PartnerCenterClient:
        return PartnerCenterClient(
            sandbox.base_url, lambda **_: "token", read_timeout_seconds=2, max_retry_after_seconds=1
        )

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sandbox.ca_bundle_path)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    proxied = client()
    monkeypatch.delenv("HTTPS_PROXY")
    direct = client()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)  # after the build: not read per call
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    host = sandbox.base_url.split("//", 1)[1].split("/", 1)[0]
    with pytest.raises(requests.exceptions.ProxyError):
        proxied._session.get(sandbox.base_url + "/v1/customers", timeout=5)
    assert [line.rsplit(" ", 1)[0] for line in proxy.request_lines] == [f"CONNECT {host}"]
    direct._session.get(sandbox.base_url + "/v1/customers", timeout=5)  # the sandbox CA is still trusted
    assert len(proxy.request_lines) == 1, "a Partner Center call re-read the proxy variables"
