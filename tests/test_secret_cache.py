"""Key Vault secrets: a cache hit never waits behind a slow Key Vault read (issue 14, defect 6)."""

from __future__ import annotations

import threading

from shared.partner_center.key_vault_secrets import build_secret_store


def test_cache_hits_never_wait_behind_a_slow_vault_read(app_env, sandbox):
    store = build_secret_store(app_env["KEY_VAULT_URL"], ttl_seconds=300)
    sandbox.set_secret("fast-secret", "fast-value")
    sandbox.set_secret("slow-secret", "slow-value")
    assert store.get("fast-secret") == "fast-value"  # warm
    sandbox.faults.add("get_secret", "delay", seconds=4.0)  # Key Vault slows down
    slow = threading.Thread(target=store.get, args=("slow-secret",), kwargs={"fresh": True})
    slow.start()
    try:
        threading.Event().wait(0.5)  # the slow read is now waiting on Key Vault (4 s)
        hit = threading.Thread(target=store.get, args=("fast-secret",))
        hit.start()
        hit.join(timeout=2.0)
        assert not hit.is_alive(), "a cache hit waited for another secret's Key Vault read"
        assert slow.is_alive(), "the slow read should still be in flight"
    finally:
        slow.join()


def test_one_read_in_flight_per_secret(app_env, sandbox):
    store = build_secret_store(app_env["KEY_VAULT_URL"], ttl_seconds=300)
    sandbox.set_secret("cold-secret", "cold-value")
    sandbox.faults.add("get_secret", "delay", seconds=1.0)
    before = len(sandbox.calls(operation="get_secret"))
    values: list[str] = []
    threads = [threading.Thread(target=lambda: values.append(store.get("cold-secret"))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert values == ["cold-value"] * 6
    assert len(sandbox.calls(operation="get_secret")) - before == 1
