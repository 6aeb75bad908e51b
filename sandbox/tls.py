"""A throwaway certificate authority so the real SDKs can speak TLS to the sandbox.

The SDKs refuse plain HTTP for bearer tokens (azure-core, MSAL's authority parsing and Key
Vault's challenge policy all require ``https``), so the sandbox must serve real TLS. Trust is
granted the way production configures it: a CA bundle file named by ``REQUESTS_CA_BUNDLE`` /
``SSL_CERT_FILE``, never by disabling verification in the code under test.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

import trustme

SERVER_IDENTITIES = ("localhost", "127.0.0.1")


class TestCertificateAuthority:
    """A fresh CA plus one server certificate for ``localhost`` and ``127.0.0.1``."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self) -> None:
        self._ca = trustme.CA(organization_name="Product Upgrades Sandbox")
        self._server_cert = self._ca.issue_cert(*SERVER_IDENTITIES)
        self._directory = tempfile.TemporaryDirectory(prefix="pc-sandbox-tls-")
        self.ca_bundle_path = str(Path(self._directory.name) / "sandbox-ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_bundle_path)
        os.chmod(self.ca_bundle_path, 0o644)

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the sandbox certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._server_cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only this CA (for stdlib clients such as ``urllib``)."""
        return ssl.create_default_context(cafile=self.ca_bundle_path)

    def cleanup(self) -> None:
        """Delete the CA bundle file; the sandbox is unusable by TLS clients afterwards."""
        self._directory.cleanup()
