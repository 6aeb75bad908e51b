"""Issue 14, defect 3: the refresh-token write-back never overwrites an operator's re-consent.

Two Functions instances (two runtimes: their own MSAL caches and Key Vault caches) against the
sandbox's Entra and Key Vault. A refresh token in the vault that an instance did not write (a
newer version than its chain started from) is adopted, never overwritten.

`renew` is what the Partner Center client does when Partner Center answers 401 (an expired
access token): `access_token(force_refresh=True)`. Assertions compare tokens to booleans first,
so a failure never prints a token."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from sandbox.server import REFRESH_TOKEN_SECRET
from shared.runtime import Runtime, build_runtime
from shared.settings import load_settings


def instance() -> Runtime:
    return build_runtime(load_settings())


def vault_token_works(sandbox) -> bool:
    """Whether Entra would redeem the refresh token now in Key Vault."""
    return sandbox.refresh_token_is_valid(sandbox.secrets[REFRESH_TOKEN_SECRET])


def renew(runtime: Runtime) -> None:
    assert runtime.tokens.access_token(force_refresh=True)


def test_a_warm_instance_adopts_the_operators_reconsent(app_env, sandbox):
    a, b = instance(), instance()
    a.tokens.access_token()
    b.tokens.access_token()  # both warm, each with its own token chain
    operators = sandbox.reconsent()  # an admin re-consents and stores the new refresh token
    sandbox.expire_access_tokens(delegated_only=True)

    renew(a)  # A renews from its cached (old) chain ...

    kept = sandbox.secret_versions(REFRESH_TOKEN_SECRET)[-1] == operators
    assert kept, "the operator's refresh token was overwritten by an instance's older chain"
    sandbox.revoke_refresh_tokens(keep_latest_consent=True)  # the old consent is withdrawn
    assert vault_token_works(sandbox)
    sandbox.expire_access_tokens(delegated_only=True)
    renew(a)  # both carry on, on the operator's chain
    renew(b)
    assert vault_token_works(sandbox)
    assert instance().tokens.access_token()  # and a cold instance starts from the vault


def test_an_instance_that_adopted_writes_its_own_rotations_again(app_env, sandbox):
    a = instance()
    a.tokens.access_token()
    operators = sandbox.reconsent()
    sandbox.expire_access_tokens(delegated_only=True)
    renew(a)  # adopts (drops its old chain, writes nothing)
    sandbox.expire_access_tokens(delegated_only=True)
    renew(a)  # redeems the operator's token; its rotation is written back
    versions = sandbox.secret_versions(REFRESH_TOKEN_SECRET)
    operators_then_rotation = versions[-2] == operators and versions[-1] == sandbox.issued_refresh_tokens[-1]
    assert operators_then_rotation


@pytest.mark.parametrize("rounds", [6])
def test_two_instances_rotating_at_once_leave_a_working_token(app_env, sandbox, rounds):
    a, b = instance(), instance()
    with ThreadPoolExecutor(2) as pool:
        for round_ in range(rounds):
            sandbox.expire_access_tokens(delegated_only=True)
            if round_ == rounds // 2:
                sandbox.reconsent()
            list(pool.map(renew, (a, b)))
            assert vault_token_works(sandbox)
    sandbox.revoke_refresh_tokens(keep_latest_consent=True)  # only the re-consent's chain stays valid
    assert vault_token_works(sandbox)
    sandbox.expire_access_tokens(delegated_only=True)
    for runtime in (a, b):
        renew(runtime)
    assert instance().tokens.access_token()
