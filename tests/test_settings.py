"""Settings: one place, every problem named, defaults as documented."""

import os

import pytest

from shared.errors import ConfigurationError
from shared.settings import ALL_SETTINGS, load_settings, pending_schedule

MINIMAL = {
    "KEY_VAULT_URL": "https://contoso-kv.vault.azure.net/",
    "PARTNER_TENANT_ID": "contoso.onmicrosoft.com",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}


def test_minimal_settings_use_documented_defaults():
    settings = load_settings(MINIMAL)
    assert settings.key_vault_url == "https://contoso-kv.vault.azure.net"
    assert settings.partner_center_endpoint == "https://api.partnercenter.microsoft.com"
    assert settings.authority == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert settings.refresh_token_secret_name == "partner-center-refresh-token"
    assert settings.partner_center_scope == "https://api.partnercenter.microsoft.com/user_impersonation"
    assert settings.authority_is_known_microsoft_cloud


def test_missing_required_settings_are_all_named_at_once():
    with pytest.raises(ConfigurationError) as raised:
        load_settings({})
    assert "KEY_VAULT_URL is required" in raised.value.detail
    assert "PARTNER_TENANT_ID is required" in raised.value.detail


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("KEY_VAULT_URL", "http://kv.vault.azure.net", "KEY_VAULT_URL must be an https:// URL"),
        ("PARTNER_CENTER_ENDPOINT", "ftp://x", "PARTNER_CENTER_ENDPOINT must be an https:// URL"),
        ("PARTNER_TENANT_ID", "not a tenant", "PARTNER_TENANT_ID must be a tenant GUID or domain"),
        ("REFRESH_TOKEN_SECRET_NAME", "has_underscore", "REFRESH_TOKEN_SECRET_NAME must be a Key Vault secret name"),
        ("SECRET_CACHE_SECONDS", "ten", "SECRET_CACHE_SECONDS must be a whole number"),
        ("PARTNER_CENTER_TIMEOUT_SECONDS", "31", "PARTNER_CENTER_TIMEOUT_SECONDS must be between 1 and 30"),
    ],
)
def test_invalid_values_name_the_setting(name, value, expected):
    with pytest.raises(ConfigurationError) as raised:
        load_settings({**MINIMAL, name: value})
    assert expected in raised.value.detail


def test_unknown_authority_host_turns_off_instance_discovery():
    settings = load_settings({**MINIMAL, "AZURE_AUTHORITY_HOST": "https://127.0.0.1:8443"})
    assert not settings.authority_is_known_microsoft_cloud
    sovereign = load_settings({**MINIMAL, "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.us"})
    assert sovereign.authority_is_known_microsoft_cloud


def test_every_setting_has_a_description_and_a_unique_name():
    names = [setting.name for setting in ALL_SETTINGS]
    assert len(names) == len(set(names))
    assert all(setting.description for setting in ALL_SETTINGS)


def test_storage_identity_based_forms_as_flex_consumption_deploys_them():
    base = {key: value for key, value in MINIMAL.items() if key != "AzureWebJobsStorage"}
    by_account = load_settings({**base, "AzureWebJobsStorage__accountName": "stupgrades", "AZURE_CLIENT_ID": "cid"})
    assert by_account.storage.connection_string is None
    assert by_account.storage.table_endpoint == "https://stupgrades.table.core.windows.net"
    assert by_account.storage.client_id == "cid"
    by_uri = load_settings(
        {
            **base,
            "AzureWebJobsStorage__tableServiceUri": "https://stupgrades.table.core.windows.net",
            "AzureWebJobsStorage__clientId": "uami",
        }
    )
    assert by_uri.storage.client_id == "uami"
    with pytest.raises(ConfigurationError) as raised:
        load_settings(base)
    assert "AzureWebJobsStorage is required" in raised.value.detail


def test_storage_connection_string_is_never_shown():
    settings = load_settings({**MINIMAL, "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountKey=c2VjcmV0"})
    assert "c2VjcmV0" not in repr(settings)


def test_pending_schedule_default_and_validation():
    assert pending_schedule({}) == "0 */5 * * * *"
    assert pending_schedule({"PENDING_SCHEDULE": "*/30 * * * * *"}) == "*/30 * * * * *"
    with pytest.raises(ConfigurationError) as raised:
        pending_schedule({"PENDING_SCHEDULE": "*/5 * * * *"})
    assert "6-field NCRONTAB" in raised.value.detail


@pytest.mark.parametrize("value", ["yes", "1", "TRUE ", ""])
def test_boolean_settings_are_true_or_false(value):
    if value.strip().lower() in ("true", ""):
        assert load_settings({**MINIMAL, "INBOUND_SIGNATURES_REQUIRED": value}).inbound_signatures_required is (
            value.strip().lower() == "true"
        )
        return
    with pytest.raises(ConfigurationError) as raised:
        load_settings({**MINIMAL, "INBOUND_SIGNATURES_REQUIRED": value})
    assert "INBOUND_SIGNATURES_REQUIRED must be true or false" in raised.value.detail


def test_local_settings_values_become_environment_defaults(tmp_path, monkeypatch):
    """`local.settings.json` as Core Tools reads it (the local runner and CLI run it in their own
    processes, so it is checked here, in-process)."""
    from shared.local_settings import apply, load_local_settings

    assert load_local_settings(tmp_path / "missing.json") == {}
    path = tmp_path / "local.settings.json"
    path.write_text('{"IsEncrypted": false, "Values": {"PENDING_CONCURRENCY": 3, "STATUS_POLL_SECONDS": "60"}}')
    values = load_local_settings(path)
    assert values == {"PENDING_CONCURRENCY": "3", "STATUS_POLL_SECONDS": "60"}
    monkeypatch.setenv("STATUS_POLL_SECONDS", "90")  # the shell wins over the file
    monkeypatch.delenv("PENDING_CONCURRENCY", raising=False)
    apply(values)
    assert (os.environ["PENDING_CONCURRENCY"], os.environ["STATUS_POLL_SECONDS"]) == ("3", "90")
    monkeypatch.delenv("PENDING_CONCURRENCY")
    path.write_text('{"Values": ["not", "an", "object"]}')
    with pytest.raises(ValueError, match="'Values' must be an object"):
        load_local_settings(path)


def test_a_bad_pending_schedule_still_indexes_every_function(tmp_path):
    """The v2 programming model indexes function_app.py at import: a malformed PENDING_SCHEDULE
    must not make the worker index zero functions (the host resolves %PENDING_SCHEDULE% itself)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = (
        "import json, function_app\n"
        "app = function_app.app\n"
        "functions = {f.get_function_name(): f.get_trigger().get_dict_repr() for f in app.get_functions()}\n"
        "print(json.dumps({name: trigger.get('schedule') for name, trigger in functions.items()}))\n"
    )
    env = {**os.environ, "PENDING_SCHEDULE": "*/5 * * * *"}  # 5 fields: not NCRONTAB
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    functions = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(functions) == 20, sorted(functions)  # 11 + the 9 campaign routes
    assert functions["process_pending_requests"] == "%PENDING_SCHEDULE%"


def test_the_local_runner_resolves_binding_expressions_as_the_host_does():
    from localrun.timers import resolve_schedule
    from shared.errors import ConfigurationError

    assert resolve_schedule("%PENDING_SCHEDULE%", {"PENDING_SCHEDULE": "*/30 * * * * *"}) == "*/30 * * * * *"
    assert resolve_schedule("%PENDING_SCHEDULE%", {}) == "0 */5 * * * *"  # the documented default
    assert resolve_schedule("0 0 * * * *", {}) == "0 0 * * * *"
    with pytest.raises(ConfigurationError, match="PENDING_SCHEDULE must be a 6-field"):
        resolve_schedule("%PENDING_SCHEDULE%", {"PENDING_SCHEDULE": "*/5 * * * *"})
    with pytest.raises(ConfigurationError, match="NOT_A_SETTING"):
        resolve_schedule("%NOT_A_SETTING%", {})


def test_the_settings_report_names_a_bad_schedule_but_load_settings_does_not_fail_on_it():
    from shared.settings import settings_report

    minimal = {**MINIMAL, "CALLER_AUTH": "function-key"}  # the report also checks what every route checks
    values = {**minimal, "PENDING_SCHEDULE": "*/5 * * * *"}
    load_settings(values)  # the HTTP routes keep working
    report = settings_report(values)
    assert len(report) == 1 and "PENDING_SCHEDULE must be a 6-field" in report[0]
    assert settings_report({**minimal, "PENDING_SCHEDULE": "0 */5 * * * *"}) == []
    assert settings_report({**minimal, "PENDING_SCHEDULE": "0 */5 * * * * ; rm"}) != []
