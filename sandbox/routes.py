"""Which path goes to which fake service, and under which recorded operation name.

One TLS server hosts Entra, Key Vault and Partner Center, told apart by path exactly as the
app's configuration would point three real hosts at one base URL. Partner Center paths are
matched case-insensitively (the docs spell them ``productupgrades`` and ``productUpgrades``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import control, customer_listing, entra, key_vault, managed_identity, partner_center
from .faults import FaultAction
from .state import SandboxState
from .wire import Request, Response

Handler = Callable[..., Response]
FaultResponder = Callable[[Request, FaultAction, SandboxState], Response]

CONTROL = "control"


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    service: str
    operation: str
    handler: Handler
    on_fault: FaultResponder | None = None


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict[str, Any]


def _route(
    method: str,
    pattern: str,
    service: str,
    operation: str,
    handler: Handler,
    on_fault: FaultResponder | None = None,
    flags: int = 0,
) -> Route:
    return Route(method, re.compile(pattern, flags), service, operation, handler, on_fault)


class RouteTable:
    """Ordered routes; the first whose method and path match wins."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = tuple(routes)

    def match(self, method: str, path: str) -> Match | None:
        for route in self._routes:
            found = route.pattern.match(path)
            if found and route.method == method:
                return Match(route, {k: v for k, v in found.groupdict().items() if v is not None})
        return None

    def path_known(self, path: str) -> bool:
        """True if some route serves this path with another method (-> 405 rather than 404)."""
        return any(route.pattern.match(path) for route in self._routes)


def tls_routes() -> RouteTable:
    """Routes of the HTTPS server: control, Entra, Key Vault, Partner Center."""
    pc, kv, aad = "partner_center", "key_vault", "entra"
    ci = re.IGNORECASE
    return RouteTable(
        [
            _route("GET", r"^/_sandbox/calls/?$", CONTROL, "calls", control.calls),
            _route("GET", r"^/_sandbox/health/?$", CONTROL, "health", control.health),
            _route("POST", r"^/_sandbox/reset/?$", CONTROL, "reset", control.reset),
            _route("POST", r"^/_sandbox/faults/?$", CONTROL, "faults", control.add_faults),
            _route("DELETE", r"^/_sandbox/faults/?$", CONTROL, "faults", control.clear_faults),
            _route("PUT", r"^/_sandbox/latency/?$", CONTROL, "latency", control.set_latency),
            _route("PUT", r"^/_sandbox/throttle/?$", CONTROL, "throttle", control.set_throttle),
            _route("POST", r"^/_sandbox/customers/seed/?$", CONTROL, "customers_seed", control.seed_customers),
            _route("POST", r"^/_sandbox/caller-tokens/?$", CONTROL, "caller_tokens", control.caller_token),
            _route("POST", r"^/_sandbox/signing-keys/rotate/?$", CONTROL, "signing_keys", control.rotate_signing_keys),
            _route(
                "PUT", r"^/_sandbox/customers/(?P<customer_id>[^/]+)/?$", CONTROL, "customers", control.set_customer
            ),
            _route(
                "GET",
                r"^/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration/?$",
                aad,
                "openid_configuration",
                entra.openid_configuration,
                entra.fault_response,
            ),
            _route(
                "GET", r"^/(?P<tenant>[^/]+)/discovery/v2\.0/keys/?$", aad, "jwks", entra.jwks, entra.fault_response
            ),
            _route(
                "POST", r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token/?$", aad, "token", entra.token_v2, entra.fault_response
            ),
            _route("POST", r"^/(?P<tenant>[^/]+)/oauth2/token/?$", aad, "token", entra.token_v1, entra.fault_response),
            _route(
                "GET", r"^/secrets/(?P<name>[^/]+)/?$", kv, "get_secret", key_vault.get_secret, key_vault.fault_response
            ),
            _route(
                "GET",
                r"^/secrets/(?P<name>[^/]+)/(?P<version>[^/]+)/?$",
                kv,
                "get_secret",
                key_vault.get_secret,
                key_vault.fault_response,
            ),
            _route(
                "PUT", r"^/secrets/(?P<name>[^/]+)/?$", kv, "set_secret", key_vault.set_secret, key_vault.fault_response
            ),
            _route(
                "GET",
                r"^/v1/customers/?$",
                pc,
                "list_customers",
                customer_listing.list_customers,
                partner_center.fault_response,
                ci,
            ),
            _route(
                "POST",
                r"^/v1/productupgrades/?$",
                pc,
                "create_upgrade",
                partner_center.create_upgrade,
                partner_center.fault_response,
                ci,
            ),
            _route(
                "POST",
                r"^/v1/productupgrades/eligibility/?$",
                pc,
                "eligibility",
                partner_center.eligibility,
                partner_center.fault_response,
                ci,
            ),
            _route(
                "POST",
                r"^/v1/productupgrades/(?P<upgrade_id>[^/]+)/status/?$",
                pc,
                "upgrade_status",
                partner_center.upgrade_status,
                partner_center.fault_response,
                ci,
            ),
            _route(
                "POST",
                r"^/v1/productupgrades/(?P<upgrade_id>[^/]+)/?$",
                pc,
                "upgrade_status",
                partner_center.upgrade_status,
                partner_center.fault_response,
                ci,
            ),
        ]
    )


def identity_routes() -> RouteTable:
    """Routes of the plain-HTTP managed identity server."""
    return RouteTable(
        [
            _route(
                "GET",
                r"^/msi/token/?$",
                "managed_identity",
                "token",
                managed_identity.token,
                managed_identity.fault_response,
            ),
        ]
    )
