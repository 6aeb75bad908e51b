"""Local HTTPS fakes of Entra ID, managed identity, Key Vault and Partner Center.

The real SDKs (requests, msal, azure-identity, azure-keyvault-secrets) talk to these fakes over
real TLS, so tests exercise the production code paths unchanged; only configuration differs.
"""

from .customer_directory import CustomerProfile
from .customers import CustomerScenario
from .faults import FaultAction, Faults
from .recorder import RecordedCall
from .server import APP_ID_SECRET, APP_SECRET_SECRET, REFRESH_TOKEN_SECRET, Sandbox

__all__ = [
    "APP_ID_SECRET",
    "APP_SECRET_SECRET",
    "REFRESH_TOKEN_SECRET",
    "CustomerProfile",
    "CustomerScenario",
    "FaultAction",
    "Faults",
    "RecordedCall",
    "Sandbox",
]
