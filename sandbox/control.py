"""The ``/_sandbox/`` control surface, for processes that cannot hold the ``Sandbox`` object.

Benchmarks and the local runner start the sandbox in another process (``python -m sandbox``)
and still need to read call counts, inject faults and set latency. These routes are never
recorded and never faulted.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .wire import Request, Response

if TYPE_CHECKING:
    from .state import SandboxState


def _json_body(request: Request) -> Any:
    if not request.body.strip():
        return {}
    return request.json()


def _bad(message: str) -> Response:
    return Response.json(400, {"error": message})


def calls(request: Request, state: SandboxState) -> Response:
    """``GET /_sandbox/calls``: counts per service/operation and submissions per customer."""
    counts = state.calls.counts()
    body = {
        "calls": counts,
        "total": sum(sum(ops.values()) for ops in counts.values()),
        "submissions": state.upgrades.submission_counts(),
        "faults_pending": state.faults.pending(),
        "latency": state.latency,
        "throttle": throttle_view(state),
    }
    return Response.json(200, body)


def reset(request: Request, state: SandboxState) -> Response:
    """``POST /_sandbox/reset``: forget calls, faults, latency and the throttle; ``{"upgrades": true}``
    also forgets upgrades, ``{"customers": true}`` scenarios and the customer list."""
    try:
        options = _json_body(request)
    except ValueError:
        return _bad("body must be JSON")
    state.calls.clear()
    state.faults.clear()
    state.throttle.clear()
    state.latency = 0.0
    if isinstance(options, dict) and options.get("upgrades"):
        state.upgrades.clear()
    if isinstance(options, dict) and options.get("customers"):
        state.customers.clear()
    return Response.json(200, {"reset": True})


def add_faults(request: Request, state: SandboxState) -> Response:
    """``POST /_sandbox/faults``: a spec, a list of specs, ``{"random": {...}}`` or ``{"clear": true}``."""
    try:
        spec = _json_body(request)
        specs = spec if isinstance(spec, list) else [spec]
        for item in specs:
            if not isinstance(item, dict):
                return _bad("a fault spec is a JSON object")
            if item.get("clear"):
                state.faults.clear()
            elif "random" in item:
                state.faults.set_random(**item["random"])
            else:
                state.faults.add_spec(item)
    except (ValueError, KeyError, TypeError) as exc:
        return _bad(f"invalid fault spec: {exc}")
    return Response.json(200, {"faults_pending": state.faults.pending()})


def clear_faults(request: Request, state: SandboxState) -> Response:
    """``DELETE /_sandbox/faults``."""
    state.faults.clear()
    return Response.json(200, {"faults_pending": []})


def set_latency(request: Request, state: SandboxState) -> Response:
    """``PUT /_sandbox/latency`` with ``{"seconds": x}``."""
    try:
        seconds = float(_json_body(request)["seconds"])
    except (ValueError, KeyError, TypeError):
        return _bad('body must be {"seconds": <number>}')
    if seconds < 0:
        return _bad("seconds must not be negative")
    state.latency = seconds
    return Response.json(200, {"latency": seconds})


def set_customer(request: Request, state: SandboxState, customer_id: str) -> Response:
    """``PUT /_sandbox/customers/{id}`` with CustomerScenario fields."""
    try:
        settings = _json_body(request)
        if not isinstance(settings, dict):
            return _bad("body must be a JSON object")
        scenario = state.customers.set(customer_id, **settings)
    except (ValueError, TypeError) as exc:
        return _bad(f"invalid scenario: {exc}")
    return Response.json(200, {"customerId": customer_id, **dataclasses.asdict(scenario)})


def throttle_view(state: SandboxState) -> dict[str, Any]:
    setting = state.throttle.setting
    return {**(setting.as_dict() if setting else {"perMinute": None}), "refused": state.throttle.refused}


def set_throttle(request: Request, state: SandboxState) -> Response:
    """``PUT /_sandbox/throttle`` with ``{"perMinute": R, "windowSeconds": W}`` (W optional, 60);
    ``{"perMinute": null}`` (or 0) switches Partner Center's throttle off (and forgets its count)."""
    from .throttle import DEFAULT_WINDOW_SECONDS, ThrottleSetting

    try:
        options = _json_body(request)
        if not isinstance(options, dict) or "perMinute" not in options:
            return _bad('body must be {"perMinute": <calls per minute or null>, "windowSeconds": <optional>}')
        per_minute = options["perMinute"]
        if per_minute in (None, 0):
            state.throttle.clear()
        else:
            window = float(options.get("windowSeconds") or DEFAULT_WINDOW_SECONDS)
            state.throttle.configure(ThrottleSetting(float(per_minute), window))
    except (ValueError, TypeError) as exc:
        return _bad(f"invalid throttle: {exc}")
    return Response.json(200, throttle_view(state))


def seed_customers(request: Request, state: SandboxState) -> Response:
    """``POST /_sandbox/customers/seed`` with ``{"count": N, "randomSeed": S}``: N more customers on
    the partner's list, a realistic mix (see ``customer_seed``); what was seeded."""
    from .customer_seed import seed_customers as seed

    try:
        options = _json_body(request)
        if not isinstance(options, dict) or not isinstance(options.get("count"), int):
            return _bad('body must be {"count": <integer>, "randomSeed": <optional integer>}')
        random_seed = options.get("randomSeed")
        summary = seed(state.customers, options["count"], None if random_seed is None else int(random_seed))
    except (ValueError, TypeError) as exc:
        return _bad(f"invalid seed request: {exc}")
    return Response.json(200, summary.as_dict())


def health(request: Request, state: SandboxState) -> Response:
    """``GET /_sandbox/health``: readiness probe for processes waiting on ``python -m sandbox``."""
    return Response.json(200, {"status": "ok", "base_url": state.base_url})


_CALLER_TOKEN_FIELDS = (
    "kind",
    "roles",
    "audience",
    "tenant_id",
    "version",
    "lifetime",
    "object_id",
    "app_id",
    "username",
)


def caller_token(request: Request, state: SandboxState) -> Response:
    """``POST /_sandbox/caller-tokens`` with ``{"roles": [...], "kind": "user"|"application",
    "audience": ..., "lifetime": seconds, ...}``: a signed caller token, as Entra would issue it
    (the local runner's ready-made ``curl`` lines use this)."""
    from .caller_tokens import CallerTokenRequest, caller_claims, sign

    try:
        fields = _json_body(request)
        if not isinstance(fields, dict) or set(fields) - set(_CALLER_TOKEN_FIELDS):
            return _bad(f"body must be a JSON object with fields among {', '.join(_CALLER_TOKEN_FIELDS)}")
        if "roles" in fields:
            fields["roles"] = tuple(str(role) for role in fields["roles"])
        wanted = CallerTokenRequest(**fields)
    except (ValueError, TypeError) as exc:
        return _bad(f"invalid caller token request: {exc}")
    if wanted.kind not in ("user", "application"):
        return _bad('kind must be "user" or "application"')
    token = sign(caller_claims(wanted, state.base_url, state.identities.tenant_id), state.signing_keys.current)
    state.caller_tokens.append(token)
    return Response.json(
        200, {"token_type": "Bearer", "access_token": token, "expires_in": wanted.lifetime, "roles": list(wanted.roles)}
    )


def rotate_signing_keys(request: Request, state: SandboxState) -> Response:
    """``POST /_sandbox/signing-keys/rotate`` (``{"retire_old": true}`` drops the old keys)."""
    try:
        options = _json_body(request)
    except ValueError:
        return _bad("body must be JSON")
    retire = bool(options.get("retire_old")) if isinstance(options, dict) else False
    kid = state.signing_keys.rotate(retire_old=retire)
    return Response.json(200, {"kid": kid, "keys": [key["kid"] for key in state.signing_keys.jwks()["keys"]]})
