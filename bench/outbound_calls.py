"""Scenario 3: outbound calls of one warm upgrade, as the sandbox (and the storage meter) saw them.

After a few warm-up upgrades (token, secrets and connections in place), `sandbox.reset_calls()`,
then one upgrade through the HTTP function: the sandbox's record by service/operation must be one
Partner Center create and nothing else (no Key Vault read, no Entra token call). Then the same
over K more upgrades, to show it stays so. Storage calls (Azurite, not seen by the sandbox) are
counted by bench.harness.Meter on the store's table client.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .harness import Meter, app_environment, instrument_runtime, log_progress, new_customer, upgrade

SERVICES = ("partner_center", "key_vault", "entra", "managed_identity")


def _counts(sandbox: Any, meter: Meter, upgrades: int) -> dict[str, Any]:
    calls = sandbox.calls()
    by_operation = Counter(f"{call.service}.{call.operation}" for call in calls)
    by_service = Counter(call.service for call in calls)
    storage = {key: value["calls"] for key, value in meter.summary().items() if key.startswith("storage.")}
    return {
        "upgrades": upgrades,
        "byOperation": dict(sorted(by_operation.items())),
        "byService": {service: by_service.get(service, 0) for service in SERVICES}
        | {k: v for k, v in by_service.items() if k not in SERVICES},
        "storageCalls": storage,
    }


def _round_trips(counts: dict[str, Any]) -> int:
    """Storage requests (a query's page iterations are counted apart, as `.page`)."""
    return sum(n for op, n in counts["storageCalls"].items() if not op.endswith(".page"))


def run(params: dict[str, Any]) -> dict[str, Any]:
    from shared.runtime import get_runtime

    warmup, more = int(params["warmup"]), int(params["more"])
    with app_environment() as env:
        sandbox = env.sandbox
        runtime = get_runtime()
        meter = Meter()
        instrument_runtime(runtime, meter)
        cold_counts = None
        log_progress(f"{warmup} warm-up upgrades, then 1, then {more}")
        for index in range(warmup):
            status, _ = upgrade(new_customer())
            if status != 202:
                raise RuntimeError(f"warm-up upgrade answered {status}")
            if index == 0:
                cold_counts = _counts(sandbox, meter, 1)

        sandbox.reset_calls()
        meter.reset()
        status, body = upgrade(new_customer())
        if status != 202 or body.get("status") != "submitted":
            raise RuntimeError(f"upgrade answered {status} {body.get('status')}")
        one = _counts(sandbox, meter, 1)

        sandbox.reset_calls()
        meter.reset()
        for _ in range(more):
            upgrade(new_customer())
        many = _counts(sandbox, meter, more)

    services = one["byService"]
    return {
        "coldFirstUpgrade": cold_counts,
        "warmOneUpgrade": one,
        "warmManyUpgrades": many,
        "targets": {
            "partnerCenterCalls": {"expected": 1, "measured": services["partner_center"]},
            "keyVaultCalls": {"expected": 0, "measured": services["key_vault"]},
            "tokenCalls": {"expected": 0, "measured": services["entra"] + services["managed_identity"]},
            "storageRoundTrips": {"expected": 2, "measured": _round_trips(one)},
        },
        "storageRoundTrips": {"expected": 2, "measured": _round_trips(one)},
        "targetsMet": _round_trips(one) == 2
        and services["partner_center"] == 1
        and one["byOperation"].get("partner_center.create_upgrade") == 1
        and services["key_vault"] == 0
        and services["entra"] == 0
        and services["managed_identity"] == 0,
        "manyPerUpgrade": {k: round(v / more, 3) for k, v in many["byService"].items()},
    }
