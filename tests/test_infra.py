"""The deployment contract: `infra/` (Bicep, parsed with pycep-parser), `azure.yaml` and the code agree,
and the security invariants of the deployment hold.

Each invariant is a function from the parsed templates to a list of problems. Every one is run on the
real templates (no problems) and on mutated copies that break it (a problem naming what broke): a check
that cannot fail proves nothing.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared.settings import ALL_SETTINGS, AZURE_WEBJOBS_STORAGE, UPGRADE_REQUESTS_TABLE

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
MAIN = "infra/main.bicep"
FUNCTION_APP_MODULE = "modules/functionapp.bicep"  # as main.bicep names it

# App settings the Functions host, the Azure SDKs or Application Insights read; not in ALL_SETTINGS.
HOST_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_ENABLE_OPENTELEMETRY",
}
# Flex Consumption rejects these (the runtime is in functionAppConfig) or they carry a key.
FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
}

# The only roles the deployment may grant, by built-in role definition id.
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
# What the app's identity must hold, and on what kind of resource (never a resource group).
APP_GRANTS = {
    ("Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"),
    ("Storage Table Data Contributor", "Microsoft.Storage/storageAccounts"),
    ("Key Vault Secrets Officer", "Microsoft.KeyVault/vaults"),
    ("Monitoring Metrics Publisher", "Microsoft.Insights/components"),
}
APP_PRINCIPAL = "identity.outputs.principalId"  # main.bicep's name for the UAMI's object id

AZD_OUTPUTS = {
    "AZURE_LOCATION",
    "AZURE_TENANT_ID",
    "AZURE_RESOURCE_GROUP",
    "AZURE_FUNCTION_APP_NAME",
    "KEY_VAULT_NAME",
    "KEY_VAULT_URL",
}

# Code that reads keys or carries them: `list*()` functions (listKeys, listAccountSas, ...), storage
# connection strings and SAS tokens.
SECRET_PATTERNS = {
    "a list*() call (reads keys into the deployment)": re.compile(r"\blist[A-Z][A-Za-z]*\s*\("),
    "a storage connection string": re.compile(r"AccountKey\s*=|DefaultEndpointsProtocol\s*=", re.IGNORECASE),
    "a shared access signature": re.compile(r"SharedAccessSignature|[?&]sig=", re.IGNORECASE),
}
SECRET_WORDS = re.compile(r"secret|password|passwd|token|connectionstring|instrumentationkey|accountkey", re.IGNORECASE)


# --- the templates, parsed ------------------------------------------------------------------------


@functools.cache
def _parser() -> BicepParser:
    return BicepParser(cache=False)  # no lark cache file: pytest-xdist workers would race on it


@dataclass(frozen=True)
class Resource:
    file: str
    symbol: str
    type: str
    body: dict[str, Any]
    condition: Any  # None when unconditional


@dataclass(frozen=True)
class Infra:
    texts: dict[str, str]  # repo-relative path -> text, for every infra file and azure.yaml
    bicep: dict[str, dict[str, Any]]  # repo-relative path -> pycep JSON

    def resources(self, type_: str | None = None) -> list[Resource]:
        found = []
        for file, parsed in self.bicep.items():
            for symbol, resource in (parsed.get("resources") or {}).items():
                if resource.get("existing"):
                    continue  # a reference to a resource declared elsewhere
                config = resource["config"]
                condition = config.get("condition") if "condition" in config and "config" in config else None
                body = config["config"] if condition is not None else config
                if type_ is None or resource["type"].lower() == type_.lower():
                    found.append(Resource(file, symbol, resource["type"], body, condition))
        return found

    def one(self, type_: str) -> Resource:
        found = self.resources(type_)
        assert len(found) == 1, f"expected one {type_} in infra/, found {len(found)}"
        return found[0]

    def module_args(self, module_path: str) -> dict[str, Any]:
        """The params main.bicep passes to the module at `module_path`."""
        for module in (self.bicep[MAIN].get("modules") or {}).values():
            if module["detail"]["path"] == module_path:
                return module_config(module)["params"]
        raise AssertionError(f"main.bicep does not call {module_path}")

    def module_condition(self, module_path: str) -> Any:
        """main.bicep's `if (...)` on the module at `module_path`; None when unconditional."""
        for module in (self.bicep[MAIN].get("modules") or {}).values():
            if module["detail"]["path"] == module_path:
                config = module["config"]
                return config["condition"] if "condition" in config and "config" in config else None
        raise AssertionError(f"main.bicep does not call {module_path}")

    def module_path_of(self, file: str) -> str:
        return str(Path(file).relative_to("infra"))

    def traced(self, file: str, expression: Any) -> str:
        """`expression` from a module, with a bare module parameter replaced by what main.bicep passes."""
        text = render(expression)
        if file != MAIN and text in (self.bicep[file].get("parameters") or {}):
            args = self.module_args(self.module_path_of(file))
            if text in args:
                return render(args[text])
        return text


def module_config(module: dict[str, Any]) -> dict[str, Any]:
    """A module's body (name, params), whether or not it has an `if (...)`."""
    config = module["config"]
    return config["config"] if "condition" in config and "config" in config else config


def render(expression: Any) -> str:
    """pycep's JSON for an expression, back as (roughly) Bicep text: `keyVault.outputs.uri`."""
    if isinstance(expression, bool):
        return str(expression).lower()
    if expression is None:
        return "null"
    if isinstance(expression, str | int):
        return str(expression)
    if isinstance(expression, list):
        return "[" + ", ".join(render(item) for item in expression) + "]"
    if "operator" in expression:
        kind, operands = expression["operator"]["type"], expression["operator"]["operands"]
        if kind == "property_accessor":
            return f"{render(operands['operand_1'])}.{render(operands['operand_2'])}"
        if kind == "function_accessor":
            return f"{render(operands['operand_1'])}.{operands['func_name']}()"
        if kind == "index_accessor":
            return f"{render(operands['operand_1'])}[{render(operands['operand_2'])}]"
        return f"{kind}({', '.join(render(value) for value in operands.values())})"
    if "function" in expression:
        function = expression["function"]
        arguments = [render(value) for value in (function.get("parameters") or {}).values() if value is not None]
        return f"{function['type']}({', '.join(arguments)})"
    return "{" + ", ".join(f"{key}: {render(value)}" for key, value in expression.items()) + "}"


def infra_files() -> list[Path]:
    return sorted([*INFRA.rglob("*.bicep"), *INFRA.rglob("*.json"), ROOT / "azure.yaml"])


def load_infra(mutations: Iterable[tuple[str, str, str]] = ()) -> Infra:
    """The templates as they are, or with `(file, old, new)` text replacements applied first."""
    texts = {str(path.relative_to(ROOT)): path.read_text() for path in infra_files()}
    for file, old, new in mutations:
        assert texts[file].count(old) == 1, f"mutation anchor not found once in {file}: {old!r} (update the test)"
        texts[file] = texts[file].replace(old, new)
    bicep = {file: _parser().parse(text=text) for file, text in texts.items() if file.endswith(".bicep")}
    return Infra(texts, bicep)


@functools.cache
def real_infra() -> Infra:
    return load_infra()


# --- the invariants -------------------------------------------------------------------------------


def app_settings(infra: Infra) -> tuple[Resource, dict[str, Any]]:
    site = infra.one("Microsoft.Web/sites")
    entries = site.body["properties"]["siteConfig"]["appSettings"]
    return site, {entry["name"]: entry["value"] for entry in entries}


def check_settings_contract(infra: Infra) -> list[str]:
    """Every required setting is set, every app setting is one the code or the host reads."""
    problems = []
    site, values = app_settings(infra)
    names = [entry["name"] for entry in site.body["properties"]["siteConfig"]["appSettings"]]
    problems += [f"app setting {name} is set twice" for name in sorted({n for n in names if names.count(n) > 1})]
    known = {setting.name for setting in ALL_SETTINGS} | HOST_SETTINGS
    for name in values:
        if name in FORBIDDEN_SETTINGS:
            problems.append(f"app setting {name} must not be set on Flex Consumption (or carries a key)")
        elif name not in known:
            problems.append(f"app setting {name} is neither in shared.settings.ALL_SETTINGS nor a known host setting")
    for setting in ALL_SETTINGS:
        if setting.default is not None:
            continue
        if setting is AZURE_WEBJOBS_STORAGE:
            if setting.name in values:
                problems.append("AzureWebJobsStorage is set: that is a connection string; use AzureWebJobsStorage__*")
            if not {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__tableServiceUri"} & set(values):
                problems.append("required setting AzureWebJobsStorage is not set (identity-based: __accountName)")
            if render(values.get("AzureWebJobsStorage__credential")) != "managedidentity":
                problems.append("AzureWebJobsStorage__credential must be managedidentity")
        elif setting.name not in values:
            problems.append(f"required setting {setting.name} is not set")
    return problems


def check_setting_values(infra: Infra) -> list[str]:
    """Values are wired to the resources, and the defaults are the code's defaults."""
    problems = []
    site, values = app_settings(infra)
    expected = {
        "KEY_VAULT_URL": "keyVault.outputs.uri",
        "PARTNER_TENANT_ID": "partnerTenantId",
        "AZURE_CLIENT_ID": "identity.outputs.clientId",
        "AzureWebJobsStorage__clientId": "identity.outputs.clientId",
        "AzureWebJobsStorage__accountName": "storage.outputs.name",
        "AzureWebJobsStorage__tableServiceUri": "storage.outputs.tableEndpoint",
        UPGRADE_REQUESTS_TABLE.name: "storage.outputs.tableName",
    }
    for name, wanted in expected.items():
        got = infra.traced(site.file, values.get(name))
        if got != wanted:
            problems.append(f"app setting {name} is {got}, expected {wanted}")
    vault_uri = render((infra.bicep["infra/modules/keyvault.bicep"]["outputs"].get("uri") or {}).get("value"))
    if vault_uri != "vault.properties.vaultUri":
        problems.append(f"KEY_VAULT_URL comes from the key vault module's uri output, which is {vault_uri}")
    identity = render(values.get("AZURE_CLIENT_ID"))
    if render(values.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING")) != f"ClientId=${{{identity}}};Authorization=AAD":
        problems.append("APPLICATIONINSIGHTS_AUTHENTICATION_STRING must be Entra auth with the app's identity")

    main = infra.bicep[MAIN]
    defaults = main["variables"]["settingDefaults"]["value"]
    settings_arg = render(infra.module_args(FUNCTION_APP_MODULE).get("settings"))
    if settings_arg != "union(settingDefaults, appSettingOverrides)":
        problems.append(f"the function app's settings are {settings_arg}, not the defaults merged with overrides")
    table_default = main["parameters"]["upgradeRequestsTable"]["default"]
    if table_default != UPGRADE_REQUESTS_TABLE.default:
        problems.append(
            f"upgradeRequestsTable defaults to {table_default!r}, the code to {UPGRADE_REQUESTS_TABLE.default!r}"
        )
    for setting in ALL_SETTINGS:
        if setting.default is None or setting is UPGRADE_REQUESTS_TABLE or setting.name not in values:
            continue  # absent: the code's default applies
        if setting.name in CALLER_WIRING:
            continue  # wired to the app registration: check_caller_identity
        got = render(values[setting.name])
        if got != f"settings.{setting.name}":
            problems.append(f"app setting {setting.name} is {got}, expected settings.{setting.name}")
        elif defaults.get(setting.name) != setting.default:
            problems.append(
                f"settingDefaults.{setting.name} is {defaults.get(setting.name)!r}, the code's default is "
                f"{setting.default!r}"
            )
    optional = {s.name for s in ALL_SETTINGS if s.default is not None}
    problems += [f"settingDefaults.{name} is not an optional setting of the code" for name in set(defaults) - optional]
    return problems


CALLER_ROLES = {"ProductUpgrades.Submit", "ProductUpgrades.Read"}
# Caller settings and where their values must come from (main.bicep's names).
CALLER_WIRING = {
    "CALLER_AUDIENCES": "callerApp.outputs.audiences",
    "CALLER_TENANT_IDS": "tenant().tenantId",
}
GRAPH_EXTENSION = "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:"


def check_caller_identity(infra: Infra) -> list[str]:
    """Callers sign in with Entra: CALLER_AUTH=entra, the audiences and tenant come from the API's
    app registration, which defines both app roles (for users and applications), has an
    Application ID URI, and requires a role assignment before it issues anyone a token."""
    problems = []
    site, values = app_settings(infra)
    if render(values.get("CALLER_AUTH")) != "entra":
        problems.append(f"app setting CALLER_AUTH is {render(values.get('CALLER_AUTH'))}, expected entra")
    for name, wanted in CALLER_WIRING.items():
        got = infra.traced(site.file, values.get(name))
        if got != wanted:
            problems.append(f"app setting {name} is {got}, expected {wanted}")
    apps = infra.resources("Microsoft.Graph/applications")
    if len(apps) != 1:
        return [*problems, f"expected one Microsoft.Graph/applications (the API's app registration), found {len(apps)}"]
    app = apps[0].body
    roles = {render(role.get("value")): role for role in app.get("appRoles") or []}
    for name in sorted(CALLER_ROLES - set(roles)):
        problems.append(f"the app registration does not define the app role {name}")
    for name, role in roles.items():
        members = set(role.get("allowedMemberTypes") or [])
        if name in CALLER_ROLES and members != {"User", "Application"}:
            problems.append(f"app role {name} is for {sorted(members)}, expected User and Application")
        if role.get("isEnabled") is not True:
            problems.append(f"app role {name} is not enabled")
    if not app.get("identifierUris"):
        problems.append("the app registration has no Application ID URI (identifierUris): no token audience")
    if app.get("signInAudience") != "AzureADMyOrg":
        problems.append(f"the app registration's signInAudience is {app.get('signInAudience')!r}, not AzureADMyOrg")
    principals = infra.resources("Microsoft.Graph/servicePrincipals")
    if not principals or any(p.body.get("appRoleAssignmentRequired") is not True for p in principals):
        problems.append("the API's service principal does not require an app role assignment")
    config = json.loads(infra.texts.get("infra/bicepconfig.json", "{}"))
    if not str((config.get("extensions") or {}).get("microsoftGraphV1", "")).startswith(GRAPH_EXTENSION):
        problems.append("infra/bicepconfig.json does not declare the microsoftGraphV1 extension")
    return problems


def role_grants(infra: Infra) -> list[tuple[Resource, str, str, str]]:
    """(assignment, role name or id, scope resource type or "", principal as main.bicep names it)."""
    grants = []
    for assignment in infra.resources("Microsoft.Authorization/roleAssignments"):
        parsed = infra.bicep[assignment.file]
        properties = assignment.body["properties"]
        role = render(properties["roleDefinitionId"])
        match = re.fullmatch(r"subscription_resource_id\(Microsoft\.Authorization/roleDefinitions, (\w+)\)", role)
        if match:
            role = (parsed.get("variables") or {}).get(match.group(1), {}).get("value", match.group(1))
        scope_symbol = render(assignment.body.get("scope", ""))
        scope = (parsed.get("resources") or {}).get(scope_symbol, {}).get("type", "")
        grants.append(
            (assignment, ROLES.get(role, role), scope, infra.traced(assignment.file, properties["principalId"]))
        )
    return grants


def check_role_assignments(infra: Infra) -> list[str]:
    """The app's identity holds exactly the roles it needs, each scoped to one resource."""
    problems = []
    held = set()
    for assignment, role, scope, principal in role_grants(infra):
        where = f"{assignment.file}:{assignment.symbol}"
        if role not in ROLES.values():
            problems.append(f"{where} grants {role}, not one of the roles this app needs: {sorted(ROLES.values())}")
        if not scope:
            problems.append(f"{where} is not scoped to a resource (it would cover the resource group)")
        if principal == APP_PRINCIPAL and assignment.condition is None:
            held.add((role, scope))
        elif principal != APP_PRINCIPAL and role != "Key Vault Secrets Officer":
            problems.append(f"{where} grants {role} to {principal}: besides the app, only the operator's vault role")
    for role, scope in sorted(APP_GRANTS - held):
        problems.append(f"the app's managed identity has no unconditional {role} on its {scope}")
    return problems


def check_no_secret_material(infra: Infra) -> list[str]:
    """No key, connection string or SAS in any file; no secret in a parameter default or an output."""
    problems = []
    for file, text in infra.texts.items():
        for what, pattern in SECRET_PATTERNS.items():
            if pattern.search(text):
                problems.append(f"{file} contains {what}")
    for file, parsed in infra.bicep.items():
        for name, parameter in (parsed.get("parameters") or {}).items():
            secure = any(decorator["type"] == "secure" for decorator in parameter.get("decorators") or [])
            if secure and parameter.get("default") is not None:
                problems.append(f"{file}: @secure() parameter {name} has a default")
            if SECRET_WORDS.search(name) and not secure:
                problems.append(f"{file}: parameter {name} looks like a secret but is not @secure()")
        for name, output in (parsed.get("outputs") or {}).items():
            if SECRET_WORDS.search(render(output.get("value"))) or any(
                decorator["type"] == "secure" for decorator in output.get("decorators") or []
            ):
                problems.append(f"{file}: output {name} exposes a secret ({render(output.get('value'))})")
    parameters = json.loads(infra.texts["infra/main.parameters.json"])["parameters"]
    for name, entry in parameters.items():
        if not re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*(=[^}]*)?\}", str(entry.get("value"))):
            problems.append(f"main.parameters.json sets {name} to a literal: only ${{AZD_ENV_VARIABLE}} references")
    return problems


def check_transport_and_auth(infra: Infra) -> list[str]:
    """HTTPS only, TLS 1.2+, FTP and basic publishing credentials off, storage identity-only."""
    problems = []
    site = infra.one("Microsoft.Web/sites")
    properties = site.body["properties"]
    site_config = properties.get("siteConfig", {})
    if properties.get("httpsOnly") is not True:
        problems.append("function app httpsOnly is not true")
    for key in ("minTlsVersion", "scmMinTlsVersion"):
        if site_config.get(key) not in ("1.2", "1.3"):
            problems.append(f"function app {key} is {site_config.get(key)!r}, not 1.2+")
    if site_config.get("ftpsState") != "Disabled":
        problems.append(f"function app ftpsState is {site_config.get('ftpsState')!r}, not Disabled (FTP off)")
    policies = {
        render(policy.body["name"]): policy
        for policy in infra.resources("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
        if render(policy.body.get("parent")) == site.symbol
    }
    for name in ("ftp", "scm"):
        if name not in policies or policies[name].body["properties"].get("allow") is not False:
            problems.append(f"basic publishing credentials ({name}) are not disabled on the function app")

    storage = infra.one("Microsoft.Storage/storageAccounts").body["properties"]
    for key, wanted in {
        "allowSharedKeyAccess": False,
        "minimumTlsVersion": "TLS1_2",
        "supportsHttpsTrafficOnly": True,
        "allowBlobPublicAccess": False,
    }.items():
        if storage.get(key) != wanted:
            problems.append(f"storage account {key} is {storage.get(key)!r}, expected {wanted!r}")
    insights = infra.one("Microsoft.Insights/components").body["properties"]
    if insights.get("DisableLocalAuth") is not True:
        problems.append("Application Insights accepts instrumentation-key (local) auth: DisableLocalAuth is not true")
    return problems


def check_key_vault(infra: Infra) -> list[str]:
    """RBAC mode (no access policies), soft delete and purge protection."""
    problems = []
    vault = infra.one("Microsoft.KeyVault/vaults").body["properties"]
    for key in ("enableRbacAuthorization", "enableSoftDelete", "enablePurgeProtection"):
        if vault.get(key) is not True:
            problems.append(f"key vault {key} is not true")
    if vault.get("accessPolicies"):
        problems.append("key vault has access policies: RBAC mode only")
    return problems


def check_flex_consumption(infra: Infra) -> list[str]:
    """Flex Consumption, Python 3.11, deployment package read with the user-assigned identity."""
    problems = []
    plan = infra.one("Microsoft.Web/serverfarms").body
    if plan.get("sku") != {"name": "FC1", "tier": "FlexConsumption"}:
        problems.append(f"the plan is {plan.get('sku')}, not FC1 / FlexConsumption")
    site = infra.one("Microsoft.Web/sites")
    if site.body.get("kind") != "functionapp,linux":
        problems.append(f"the site kind is {site.body.get('kind')!r}, not functionapp,linux")
    if site.body.get("identity", {}).get("type") != "UserAssigned":
        problems.append("the function app does not run as a user-assigned identity")
    config = site.body["properties"].get("functionAppConfig", {})
    if config.get("runtime") != {"name": "python", "version": "3.11"}:
        problems.append(f"functionAppConfig.runtime is {config.get('runtime')}, not python 3.11")
    storage = config.get("deployment", {}).get("storage", {})
    authentication = storage.get("authentication", {})
    if storage.get("type") != "blobContainer" or authentication.get("type") != "UserAssignedIdentity":
        problems.append("the deployment package is not a blob container read with the user-assigned identity")
    identities = [
        re.sub(r"^'\$\{(.*)\}'$", r"\1", key) for key in site.body.get("identity", {}).get("userAssignedIdentities", {})
    ]
    if [render(authentication.get("userAssignedIdentityResourceId"))] != identities:
        problems.append("the deployment storage identity is not the app's (only) user-assigned identity")
    scale = config.get("scaleAndConcurrency", {})
    if scale.get("instanceMemoryMB") not in (512, 2048, 4096) or "maximumInstanceCount" not in scale:
        problems.append(f"scaleAndConcurrency is {scale}: instanceMemoryMB 512/2048/4096 and a maximumInstanceCount")
    return problems


def check_azd(infra: Infra) -> list[str]:
    """azure.yaml deploys this folder as a Python function app; main.bicep outputs what azd needs."""
    problems = []
    azure_yaml = infra.texts["azure.yaml"]
    for line in ("project: .", "language: python", "host: function"):
        if not re.search(rf"^\s+{re.escape(line)}\s*$", azure_yaml, re.MULTILINE):
            problems.append(f"azure.yaml has no service line '{line}'")
    service = re.search(r"^services:\s*\n\s+([\w-]+):", azure_yaml, re.MULTILINE)
    site = infra.one("Microsoft.Web/sites")
    service_arg = render(infra.module_args(FUNCTION_APP_MODULE).get("serviceName"))
    if not service or service.group(1) != service_arg or "'azd-service-name'" not in render(site.body["tags"]):
        problems.append("the function app is not tagged azd-service-name with azure.yaml's service name")
    outputs = set(infra.bicep[MAIN].get("outputs") or {})
    problems += [f"main.bicep does not output {name}" for name in sorted(AZD_OUTPUTS - outputs)]
    parameters = json.loads(infra.texts["infra/main.parameters.json"])["parameters"]
    for name, parameter in infra.bicep[MAIN]["parameters"].items():
        if parameter.get("default") is None and name not in parameters:
            problems.append(f"required parameter {name} is not in main.parameters.json (azd could not fill it)")
    return problems


# --- private networking (VNET_ENABLED) ------------------------------------------------------------

PRIVATE_NETWORK_MODULES = ("modules/network.bicep", "modules/private-endpoints.bicep")
PRIVATE_ENDPOINT_AVM = "avm/res/network/private-endpoint"
PRIVATE_DNS_ZONE_AVM = "avm/res/network/private-dns-zone"
VIRTUAL_NETWORK_AVM = "avm/res/network/virtual-network"
APP_SUBNET_DELEGATION = "Microsoft.App/environments"
# Private endpoint group id -> the private DNS zone it needs, and which main.bicep resource it serves.
# No queue: the app has no queue, blob or Durable trigger, so nothing uses the queue service.
PRIVATE_ENDPOINT_GROUPS = {
    "blob": (
        re.compile(r"privatelink\.blob\.(\$\{environment\(\)\.suffixes\.storage\}|core\.windows\.net)"),
        "storage",
    ),
    "table": (
        re.compile(r"privatelink\.table\.(\$\{environment\(\)\.suffixes\.storage\}|core\.windows\.net)"),
        "storage",
    ),
    "vault": (re.compile(r"privatelink\.vaultcore\.azure\.net"), "keyVault"),
}
# Resources whose data plane must have no public endpoint with vnetEnabled, and their main.bicep module.
DATA_PLANE = {"Microsoft.Storage/storageAccounts": "storage", "Microsoft.KeyVault/vaults": "keyVault"}
# Public by design in both variants: the API that Power Automate and webhooks call over the internet.
PUBLIC_BY_DESIGN = {"Microsoft.Web/sites"}
UNKNOWN = object()


def evaluate(expression: Any, env: dict[str, Any]) -> Any:
    """The value of a Bicep expression where `env` gives the parameters that decide it (the
    variant's vnetEnabled and what main.bicep passes a module); anything else stays as rendered
    text (`network.outputs.appSubnetId`), so a check can tell what a property is wired to."""
    if isinstance(expression, str):
        return env.get(expression, expression)
    if expression is None or isinstance(expression, bool | int):
        return expression
    if isinstance(expression, list):
        return [evaluate(item, env) for item in expression]
    if "operator" in expression:
        kind, operands = expression["operator"]["type"], expression["operator"]["operands"]
        if kind == "conditional":
            condition = evaluate(operands["condition"], env)
            if isinstance(condition, bool):
                return evaluate(operands["true_value" if condition else "false_value"], env)
            return UNKNOWN
        if kind == "not":
            value = evaluate(operands["bool_value"], env)
            return (not value) if isinstance(value, bool) else UNKNOWN
        return render(expression)
    if "function" in expression:
        function = expression["function"]
        if function["type"] == "empty":
            value = evaluate(function["parameters"]["item_to_test"], env)
            return value in ("", None, [], {}) if value is not UNKNOWN else UNKNOWN
        return render(expression)
    return {key: evaluate(value, env) for key, value in expression.items()}


def module_env(infra: Infra, file: str, vnet: bool) -> dict[str, Any]:
    """The parameters of `file` in the variant: main.bicep's vnetEnabled, or the module's defaults
    overlaid with what main.bicep passes it (evaluated in main's variant)."""
    main_env = {"vnetEnabled": vnet}
    if file == MAIN:
        return main_env
    env = {
        name: parameter["default"]
        for name, parameter in (infra.bicep[file].get("parameters") or {}).items()
        if isinstance(parameter.get("default"), bool | str | int)
    }
    for name, value in infra.module_args(infra.module_path_of(file)).items():
        evaluated = evaluate(value, main_env)
        env[name] = evaluated if isinstance(evaluated, bool | str | int) or evaluated is None else render(value)
    for name, variable in (infra.bicep[file].get("variables") or {}).items():
        value = evaluate(variable["value"], env)
        if isinstance(value, bool | str | int):
            env[name] = value
    return env


def registry_modules(infra: Infra, avm_path: str) -> dict[str, dict[str, Any]]:
    """Every module call of the registry module `avm_path`, by `file:symbol`."""
    return {
        f"{file}:{symbol}": module
        for file, parsed in infra.bicep.items()
        for symbol, module in (parsed.get("modules") or {}).items()
        if module["type"] == "bicep_registry_alias" and module["detail"]["path"] == avm_path
    }


def check_registry_modules_pinned(infra: Infra) -> list[str]:
    """Every Azure Verified Module is taken from the public registry at an exact version."""
    problems = []
    for file, parsed in infra.bicep.items():
        for symbol, module in (parsed.get("modules") or {}).items():
            if module["type"] == "local":
                continue
            detail = module["detail"]
            if not (detail.get("public") and str(detail.get("path", "")).startswith("avm/")):
                problems.append(
                    f"{file}:{symbol} is {detail.get('full')}, not an Azure Verified Module (br/public:avm)"
                )
            if not re.fullmatch(r"\d+\.\d+\.\d+", str(detail.get("tag"))):
                problems.append(f"{file}:{symbol} takes {detail.get('full')}: pin an exact version")
    return problems


def check_private_networking(infra: Infra) -> list[str]:
    """vnetEnabled (VNET_ENABLED, default false) adds the network and private endpoints and closes the
    public endpoints of storage and Key Vault; without it nothing differs from the public variant."""
    problems = []
    parameter = (infra.bicep[MAIN].get("parameters") or {}).get("vnetEnabled")
    if not parameter or parameter.get("type") != "bool" or parameter.get("default") is not False:
        problems.append(f"main.bicep needs `param vnetEnabled bool = false`, has {parameter}")
    azd_value = json.loads(infra.texts["infra/main.parameters.json"])["parameters"].get("vnetEnabled", {}).get("value")
    if not re.fullmatch(r"\$\{VNET_ENABLED(=false)?\}", str(azd_value)):
        problems.append(f"main.parameters.json sets vnetEnabled to {azd_value!r}, not ${{VNET_ENABLED}}")
    for path in PRIVATE_NETWORK_MODULES:
        condition = infra.module_condition(path)
        if evaluate(condition, {"vnetEnabled": True}) is not True or evaluate(condition, {"vnetEnabled": False}):
            problems.append(f"main.bicep deploys {path} with condition {render(condition)}, not if (vnetEnabled)")
    for vnet in (False, True):
        problems += [f"with vnetEnabled={str(vnet).lower()}: {problem}" for problem in _variant_problems(infra, vnet)]
    problems += _network_problems(infra)
    problems += _private_endpoint_problems(infra)
    return problems


def _variant_problems(infra: Infra, vnet: bool) -> list[str]:
    """Public access of every data-plane resource, and the app's integration, in one variant."""
    problems = []
    for resource in infra.resources():
        properties = resource.body.get("properties") or {}
        if "publicNetworkAccess" not in properties or resource.type in PUBLIC_BY_DESIGN:
            continue
        env = module_env(infra, resource.file, vnet)
        access = evaluate(properties["publicNetworkAccess"], env)
        acls = evaluate(properties.get("networkAcls") or {}, env)
        default_action = acls.get("defaultAction") if isinstance(acls, dict) else UNKNOWN
        where = f"{resource.file}:{resource.symbol}"
        if resource.type not in DATA_PLANE:
            problems.append(
                f"{where} ({resource.type}) has publicNetworkAccess: add it to DATA_PLANE or PUBLIC_BY_DESIGN"
            )
        elif vnet and (access != "Disabled" or default_action != "Deny"):
            problems.append(
                f"{where} has public access (publicNetworkAccess {access}, default action {default_action})"
            )
        elif not vnet and (access != "Enabled" or default_action != "Allow"):
            problems.append(f"{where} differs from the public variant ({access}, {default_action})")
    site = infra.one("Microsoft.Web/sites")
    env = module_env(infra, site.file, vnet)
    subnet = evaluate(site.body["properties"].get("virtualNetworkSubnetId"), env)
    route_all = evaluate(site.body["properties"].get("siteConfig", {}).get("vnetRouteAllEnabled"), env)
    if vnet and (subnet != "network.outputs.appSubnetId" or route_all is not True):
        problems.append(
            f"the function app's virtualNetworkSubnetId is {subnet} (route all: {route_all}), expected "
            "network.outputs.appSubnetId with all outbound traffic routed through it"
        )
    if not vnet and (subnet not in (None, "") or route_all not in (None, False)):
        problems.append(f"the function app is integrated with {subnet} without vnetEnabled")
    return problems


def _network_problems(infra: Infra) -> list[str]:
    """The network has a private-endpoint subnet and an app subnet delegated to Microsoft.App/environments,
    and the outputs the app and the endpoints use name those subnets."""
    problems = []
    networks = registry_modules(infra, VIRTUAL_NETWORK_AVM)
    if len(networks) != 1:
        return [f"expected one {VIRTUAL_NETWORK_AVM} module, found {len(networks)}"]
    ((where, network),) = networks.items()
    file = where.split(":")[0]
    variables = {name: v["value"] for name, v in (infra.bicep[file].get("variables") or {}).items()}
    subnets = {
        evaluate(subnet.get("name"), variables): subnet
        for subnet in module_config(network)["params"].get("subnets") or []
    }
    outputs = {name: render(output.get("value")) for name, output in (infra.bicep[file].get("outputs") or {}).items()}

    def subnet_of(output: str) -> str | None:
        match = re.search(r"/subnets/\$\{(\w+)\}$", outputs.get(output, ""))
        return variables.get(match.group(1), match.group(1)) if match else None

    app_subnet = subnets.get(subnet_of("appSubnetId"))
    if app_subnet is None or app_subnet.get("delegation") != APP_SUBNET_DELEGATION:
        problems.append(f"the app's subnet ({subnet_of('appSubnetId')}) is not delegated to {APP_SUBNET_DELEGATION}")
    endpoint_subnet = subnets.get(subnet_of("privateEndpointSubnetId"))
    if endpoint_subnet is None or endpoint_subnet is app_subnet or endpoint_subnet.get("delegation"):
        problems.append("the private endpoints have no subnet of their own (undelegated, apart from the app's)")
    args = infra.module_args("modules/private-endpoints.bicep")
    if render(args.get("subnetId")) != "network.outputs.privateEndpointSubnetId":
        problems.append(f"the private endpoints are placed in {render(args.get('subnetId'))}, not the endpoint subnet")
    if render(args.get("virtualNetworkId")) != "network.outputs.virtualNetworkId":
        problems.append("the private DNS zones are not linked to the app's network")
    return problems


def _private_endpoint_problems(infra: Infra) -> list[str]:
    """Every private endpoint has a DNS zone group whose zone is the one its service needs and is
    linked to the network; blob, table and vault each have one, on the right resource."""
    problems = []
    zones = registry_modules(infra, PRIVATE_DNS_ZONE_AVM)
    args = infra.module_args("modules/private-endpoints.bicep")
    covered = set()
    for where, endpoint in registry_modules(infra, PRIVATE_ENDPOINT_AVM).items():
        file = where.split(":")[0]
        params = module_config(endpoint)["params"]
        connections = params.get("privateLinkServiceConnections") or []
        groups = [group for c in connections for group in c.get("properties", {}).get("groupIds") or []]
        targets = [render(c.get("properties", {}).get("privateLinkServiceId")) for c in connections]
        configs = (params.get("privateDnsZoneGroup") or {}).get("privateDnsZoneGroupConfigs") or []
        if not configs:
            problems.append(f"{where} has no private DNS zone group: its name would not resolve to it")
            continue
        for group, target in zip(groups, targets, strict=False):
            if group not in PRIVATE_ENDPOINT_GROUPS:
                problems.append(f"{where} is for {group}, which the app does not use")
                continue
            zone_pattern, module = PRIVATE_ENDPOINT_GROUPS[group]
            if render(args.get(target)) != f"{module}.outputs.id":
                problems.append(f"{where} ({group}) points at {render(args.get(target))}, not {module}.outputs.id")
            for config in configs:
                zone_ref = render(config.get("privateDnsZoneResourceId"))
                zone = zones.get(f"{file}:{zone_ref.split('.')[0]}")
                if zone is None:
                    problems.append(f"{where} ({group}) has its zone group on {zone_ref}, not a private DNS zone")
                    continue
                zone_params = module_config(zone)["params"]
                if not zone_pattern.fullmatch(render(zone_params.get("name"))):
                    problems.append(
                        f"{where} ({group}) registers in {render(zone_params.get('name'))}, not {zone_pattern.pattern}"
                    )
                links = [
                    render(link.get("virtualNetworkResourceId"))
                    for link in zone_params.get("virtualNetworkLinks") or []
                ]
                if "virtualNetworkId" not in links:
                    problems.append(
                        f"the zone {render(zone_params.get('name'))} of {where} is not linked to the network"
                    )
                else:
                    covered.add(group)
    problems += [
        f"no private endpoint (with its linked DNS zone) for {group}"
        for group in sorted(set(PRIVATE_ENDPOINT_GROUPS) - covered)
    ]
    return problems


CHECKS: dict[str, Callable[[Infra], list[str]]] = {
    "settings_contract": check_settings_contract,
    "setting_values": check_setting_values,
    "role_assignments": check_role_assignments,
    "no_secret_material": check_no_secret_material,
    "transport_and_auth": check_transport_and_auth,
    "key_vault": check_key_vault,
    "flex_consumption": check_flex_consumption,
    "azd": check_azd,
    "caller_identity": check_caller_identity,
    "private_networking": check_private_networking,
    "registry_modules_pinned": check_registry_modules_pinned,
}


def all_problems(infra: Infra) -> list[str]:
    return [problem for check in CHECKS.values() for problem in check(infra)]


# --- the tests ------------------------------------------------------------------------------------


def test_every_infra_file_parses():
    infra = real_infra()
    assert set(infra.bicep) >= {MAIN, "infra/modules/functionapp.bicep", "infra/modules/keyvault.bicep"}
    for file, parsed in infra.bicep.items():
        assert parsed.get("resources") or parsed.get("modules"), f"{file} parsed to nothing"


@pytest.mark.parametrize("name", list(CHECKS))
def test_invariant_holds(name: str):
    assert CHECKS[name](real_infra()) == []


MODULE = "infra/modules/"
MUTATIONS = [
    pytest.param(
        [
            (
                MODULE + "storage.bicep",
                "output name string = storage.name",
                "output name string = storage.name\noutput key string = storage.listKeys().keys[0].value",
            )
        ],
        "list*() call",
        id="listKeys-output",
    ),
    pytest.param(
        [
            (
                MODULE + "functionapp.bicep",
                "name: 'AzureWebJobsStorage__accountName'\n          value: storageAccountName",
                "name: 'AzureWebJobsStorage'\n          value: 'DefaultEndpointsProtocol=https;"
                "AccountName=${storageAccountName};AccountKey=${storageKey}'",
            )
        ],
        "connection string",
        id="storage-connection-string",
    ),
    pytest.param(
        [(MAIN, "param resourceGroupName string = ''", "@secure()\nparam partnerAppSecret string = 'not-a-secret'")],
        "@secure() parameter partnerAppSecret has a default",
        id="secure-param-default",
    ),
    pytest.param(
        [(MAIN, "param resourceGroupName string = ''", "param refreshToken string = ''")],
        "looks like a secret",
        id="secret-param-not-secure",
    ),
    pytest.param(
        [
            (
                MODULE + "monitoring.bicep",
                "output workspaceId string = workspace.id",
                "output workspaceId string = workspace.id\noutput cs string = appInsights.properties.ConnectionString",
            )
        ],
        "exposes a secret",
        id="connection-string-output",
    ),
    pytest.param(
        [("infra/main.parameters.json", '"${PARTNER_TENANT_ID}"', '"contoso.onmicrosoft.com"')],
        "literal",
        id="literal-parameter",
    ),
    pytest.param(
        [(MODULE + "functionapp.bicep", "name: 'KEY_VAULT_URL'", "name: 'KEY_VAULT_URI'")],
        "required setting KEY_VAULT_URL is not set",
        id="required-setting-missing",
    ),
    pytest.param(
        [(MODULE + "functionapp.bicep", "name: 'PARTNER_TENANT_ID'", "name: 'PARTNER_TENANT'")],
        "PARTNER_TENANT is neither in shared.settings.ALL_SETTINGS",
        id="unknown-setting",
    ),
    pytest.param(
        [(MODULE + "functionapp.bicep", "name: 'AZURE_CLIENT_ID'", "name: 'FUNCTIONS_WORKER_RUNTIME'")],
        "FUNCTIONS_WORKER_RUNTIME must not be set on Flex Consumption",
        id="flex-forbidden-setting",
    ),
    pytest.param(
        [(MAIN, "PENDING_CONCURRENCY: '4'", "PENDING_CONCURRENCY: '8'")],
        "the code's default is '4'",
        id="default-drift",
    ),
    pytest.param(
        [
            (
                MAIN,
                "param upgradeRequestsTable string = 'productupgraderequests'",
                "param upgradeRequestsTable string = 'x'",
            )
        ],
        "upgradeRequestsTable defaults to 'x'",
        id="table-default-drift",
    ),
    pytest.param(
        [(MAIN, "keyVaultUri: keyVault.outputs.uri", "keyVaultUri: 'https://example.vault.azure.net'")],
        "app setting KEY_VAULT_URL is https://example.vault.azure.net, expected keyVault.outputs.uri",
        id="vault-url-not-wired",
    ),
    pytest.param(
        [(MODULE + "functionapp.bicep", "ClientId=${identityClientId};", "")],
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        id="appinsights-not-entra",
    ),
    pytest.param(
        [(MODULE + "keyvault.bicep", "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "4633458b-17de-408a-b874-0445c86b69e6")],
        "no unconditional Key Vault Secrets Officer",
        id="vault-secrets-user-only",
    ),
    pytest.param(
        [(MODULE + "storage.bicep", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "76199698-9eea-4c19-bc75-cec21354c6b6")],
        "no unconditional Storage Table Data Contributor",
        id="table-role-missing",
    ),
    pytest.param(
        [(MODULE + "storage.bicep", "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "b24988ac-6180-42a0-ab88-20f7382dd24c")],
        "grants b24988ac-6180-42a0-ab88-20f7382dd24c, not one of the roles this app needs",
        id="contributor-role",
    ),
    pytest.param(
        [
            (
                MODULE + "monitoring.bicep",
                "  scope: appInsights\n  properties: {\n    roleDefinitionId",
                "  properties: {\n    roleDefinitionId",
            )
        ],
        "not scoped to a resource",
        id="role-at-resource-group",
    ),
    pytest.param(
        [
            (
                MAIN,
                "identityPrincipalId: identity.outputs.principalId\n    operatorPrincipalId",
                "identityPrincipalId: operatorPrincipalId\n    operatorPrincipalId",
            )
        ],
        "no unconditional Key Vault Secrets Officer",
        id="vault-role-to-wrong-principal",
    ),
    pytest.param(
        [(MODULE + "functionapp.bicep", "httpsOnly: true", "httpsOnly: false")], "httpsOnly", id="http-allowed"
    ),
    pytest.param(
        [(MODULE + "functionapp.bicep", "minTlsVersion: '1.2'\n      scm", "minTlsVersion: '1.0'\n      scm")],
        "minTlsVersion is '1.0'",
        id="site-tls-1.0",
    ),
    pytest.param(
        [(MODULE + "functionapp.bicep", "ftpsState: 'Disabled'", "ftpsState: 'AllAllowed'")],
        "FTP off",
        id="ftp-on",
    ),
    pytest.param(
        [
            (
                MODULE + "functionapp.bicep",
                "name: 'scm'\n  properties: {\n    allow: false",
                "name: 'scm'\n  properties: {\n    allow: true",
            )
        ],
        "basic publishing credentials (scm)",
        id="scm-basic-auth-on",
    ),
    pytest.param(
        [(MODULE + "storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true")],
        "allowSharedKeyAccess",
        id="storage-shared-key",
    ),
    pytest.param(
        [(MODULE + "storage.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'")],
        "minimumTlsVersion",
        id="storage-tls-1.0",
    ),
    pytest.param(
        [(MODULE + "monitoring.bicep", "DisableLocalAuth: true", "DisableLocalAuth: false")],
        "DisableLocalAuth",
        id="appinsights-local-auth",
    ),
    pytest.param(
        [(MODULE + "keyvault.bicep", "enableRbacAuthorization: true", "enableRbacAuthorization: false")],
        "enableRbacAuthorization",
        id="vault-access-policies-mode",
    ),
    pytest.param(
        [(MODULE + "keyvault.bicep", "enablePurgeProtection: true", "enablePurgeProtection: false")],
        "enablePurgeProtection",
        id="vault-no-purge-protection",
    ),
    pytest.param(
        [(MODULE + "functionapp.bicep", "name: 'FC1'", "name: 'Y1'")],
        "not FC1 / FlexConsumption",
        id="not-flex",
    ),
    pytest.param(
        [(MODULE + "functionapp.bicep", "version: '3.11'", "version: '3.10'")],
        "not python 3.11",
        id="python-3.10",
    ),
    pytest.param(
        [(MODULE + "functionapp.bicep", "type: 'UserAssignedIdentity'", "type: 'StorageAccountConnectionString'")],
        "not a blob container read with the user-assigned identity",
        id="deployment-storage-key",
    ),
    pytest.param(
        [(MAIN, "output KEY_VAULT_URL string", "output VAULT string")],
        "does not output KEY_VAULT_URL",
        id="azd-output-missing",
    ),
    pytest.param(
        [("azure.yaml", "host: function", "host: appservice")],
        "host: function",
        id="azd-host",
    ),
    pytest.param(
        [
            (
                MODULE + "functionapp.bicep",
                "name: 'CALLER_AUTH'\n          value: 'entra'",
                "name: 'CALLER_AUTH'\n          value: 'function-key'",
            )
        ],
        "CALLER_AUTH is function-key, expected entra",
        id="callers-by-function-key",
    ),
    pytest.param(
        [(MODULE + "functionapp.bicep", "name: 'CALLER_AUTH'", "name: 'CALLER_AUTHENTICATION'")],
        "required setting CALLER_AUTH is not set",
        id="caller-auth-missing",
    ),
    pytest.param(
        [(MAIN, "callerAudiences: callerApp.outputs.audiences", "callerAudiences: 'api://someone-else'")],
        "CALLER_AUDIENCES is api://someone-else, expected callerApp.outputs.audiences",
        id="audiences-not-the-app-registration",
    ),
    pytest.param(
        [(MODULE + "callerapp.bicep", "value: 'ProductUpgrades.Read'", "value: 'ProductUpgrades.View'")],
        "does not define the app role ProductUpgrades.Read",
        id="read-role-missing",
    ),
    pytest.param(
        [
            (
                MODULE + "callerapp.bicep",
                "value: 'ProductUpgrades.Submit'\n      displayName: 'Submit product upgrades'\n      description: "
                "'Submit CSP customer upgrades to Azure plan and manage their completion callbacks.'\n"
                "      allowedMemberTypes: [\n        'User'\n",
                "value: 'ProductUpgrades.Submit'\n      displayName: 'Submit product upgrades'\n      description: "
                "'Submit CSP customer upgrades to Azure plan and manage their completion callbacks.'\n"
                "      allowedMemberTypes: [\n",
            )
        ],
        "app role ProductUpgrades.Submit is for ['Application'], expected User and Application",
        id="submit-role-apps-only",
    ),
    pytest.param(
        [(MODULE + "callerapp.bicep", "appRoleAssignmentRequired: true", "appRoleAssignmentRequired: false")],
        "does not require an app role assignment",
        id="no-assignment-required",
    ),
    pytest.param(
        [(MODULE + "callerapp.bicep", "signInAudience: 'AzureADMyOrg'", "signInAudience: 'AzureADMultipleOrgs'")],
        "not AzureADMyOrg",
        id="multi-tenant-registration",
    ),
    pytest.param(
        [("infra/bicepconfig.json", '"microsoftGraphV1"', '"graph"')],
        "microsoftGraphV1 extension",
        id="graph-extension-undeclared",
    ),
    pytest.param(
        [(MAIN, "param vnetEnabled bool = false", "param vnetEnabled bool = true")],
        "param vnetEnabled bool = false",
        id="vnet-on-by-default",
    ),
    pytest.param(
        [("infra/main.parameters.json", '"${VNET_ENABLED=false}"', '"${PRIVATE_NETWORK=false}"')],
        "not ${VNET_ENABLED}",
        id="vnet-not-from-azd-env",
    ),
    pytest.param(
        [
            (
                MAIN,
                "module network 'modules/network.bicep' = if (vnetEnabled) {",
                "module network 'modules/network.bicep' = {",
            )
        ],
        "deploys modules/network.bicep with condition null",
        id="network-in-public-variant",
    ),
    pytest.param(
        [
            (
                MODULE + "storage.bicep",
                "publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'",
                "publicNetworkAccess: 'Enabled'",
            )
        ],
        "with vnetEnabled=true: infra/modules/storage.bicep:storage has public access (publicNetworkAccess Enabled",
        id="vnet-storage-public",
    ),
    pytest.param(
        [
            (
                MODULE + "keyvault.bicep",
                "publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'",
                "publicNetworkAccess: 'Enabled'",
            )
        ],
        "with vnetEnabled=true: infra/modules/keyvault.bicep:vault has public access (publicNetworkAccess Enabled",
        id="vnet-vault-public",
    ),
    pytest.param(
        [(MODULE + "keyvault.bicep", "defaultAction: 'Deny'", "defaultAction: 'Allow'")],
        "with vnetEnabled=true: infra/modules/keyvault.bicep:vault has public access (publicNetworkAccess Disabled, "
        "default action Allow)",
        id="vnet-vault-allows-by-default",
    ),
    pytest.param(
        [
            (
                MAIN,
                "workspaceId: monitoring.outputs.workspaceId\n    privateNetworking: vnetEnabled",
                "workspaceId: monitoring.outputs.workspaceId",
            )
        ],
        "with vnetEnabled=true: infra/modules/keyvault.bicep:vault has public access",
        id="vnet-vault-not-told",
    ),
    pytest.param(
        [
            (
                MODULE + "storage.bicep",
                "publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'",
                "publicNetworkAccess: 'Disabled'",
            )
        ],
        "with vnetEnabled=false: infra/modules/storage.bicep:storage differs from the public variant",
        id="public-variant-changed",
    ),
    pytest.param(
        [(MODULE + "network.bicep", "        delegation: 'Microsoft.App/environments'\n", "")],
        "the app's subnet (app) is not delegated to Microsoft.App/environments",
        id="app-subnet-not-delegated",
    ),
    pytest.param(
        [
            (
                MAIN,
                "virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''",
                "virtualNetworkSubnetId: ''",
            )
        ],
        "with vnetEnabled=true: the function app's virtualNetworkSubnetId is ",
        id="app-not-integrated",
    ),
    pytest.param(
        [
            (
                MODULE + "functionapp.bicep",
                "vnetRouteAllEnabled: !empty(virtualNetworkSubnetId)",
                "vnetRouteAllEnabled: false",
            )
        ],
        "(route all: False)",
        id="app-private-traffic-only",
    ),
    pytest.param(
        [
            (
                MODULE + "private-endpoints.bicep",
                "    privateDnsZoneGroup: {\n      name: 'vault'\n      privateDnsZoneGroupConfigs: [\n        {\n"
                "          name: 'vault'\n          privateDnsZoneResourceId: vaultZone.outputs.resourceId\n"
                "        }\n      ]\n    }\n",
                "",
            )
        ],
        "vaultEndpoint has no private DNS zone group",
        id="endpoint-without-zone-group",
    ),
    pytest.param(
        [
            (
                MODULE + "private-endpoints.bicep",
                "privateDnsZoneResourceId: vaultZone.outputs.resourceId",
                "privateDnsZoneResourceId: blobZone.outputs.resourceId",
            )
        ],
        "(vault) registers in privatelink.blob.",
        id="endpoint-in-wrong-zone",
    ),
    pytest.param(
        [
            (
                MODULE + "private-endpoints.bicep",
                "        name: 'link-table'\n        virtualNetworkResourceId: virtualNetworkId\n",
                "        name: 'link-table'\n        virtualNetworkResourceId: ''\n",
            )
        ],
        "is not linked to the network",
        id="zone-not-linked",
    ),
    pytest.param(
        [
            (
                MODULE + "private-endpoints.bicep",
                "privateLinkServiceId: keyVaultId",
                "privateLinkServiceId: storageAccountId",
            )
        ],
        "(vault) points at storage.outputs.id, not keyVault.outputs.id",
        id="vault-endpoint-on-storage",
    ),
    pytest.param(
        [
            (
                MODULE + "private-endpoints.bicep",
                "          groupIds: [\n            'table'\n",
                "          groupIds: [\n            'queue'\n",
            )
        ],
        "no private endpoint (with its linked DNS zone) for table",
        id="table-endpoint-missing",
    ),
    pytest.param(
        [(MAIN, "subnetId: network.outputs.privateEndpointSubnetId", "subnetId: network.outputs.appSubnetId")],
        "not the endpoint subnet",
        id="endpoints-in-app-subnet",
    ),
    pytest.param(
        [(MODULE + "network.bicep", "virtual-network:0.6.1", "virtual-network:0.6")],
        "pin an exact version",
        id="avm-not-pinned",
    ),
]


@pytest.mark.parametrize(("mutations", "expected"), MUTATIONS)
def test_invariant_catches(mutations: list[tuple[str, str, str]], expected: str):
    problems = all_problems(load_infra(mutations))
    assert any(expected in problem for problem in problems), problems


# --- make infra-check: checkov's gate (infra/checkov_gate.py) ---


def checkov_gate() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("checkov_gate", INFRA / "checkov_gate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        ({"passed": 22, "failed": 0, "parsing_errors": 0, "resource_count": 49}, None),
        ({"passed": 22, "failed": 0, "parsing_errors": 1, "resource_count": 49}, "could not parse"),
        ({"passed": 21, "failed": 1, "parsing_errors": 0, "resource_count": 49}, "failed check"),
        ({"passed": 0, "failed": 0, "parsing_errors": 0, "resource_count": 0}, "no resource"),
    ],
)
def test_the_infra_check_fails_on_a_parsing_error(summary, expected):
    """checkov exits 0 when a file does not parse (callerapp.bicep was never scanned): the gate does not."""
    found = checkov_gate().problems({"check_type": "bicep", "results": {}, "summary": summary})
    assert (found == []) if expected is None else any(expected in problem for problem in found)
    assert checkov_gate().problems([{"summary": summary}]) == found  # several frameworks: a list


def test_each_module_left_out_of_checkov_is_checked_by_the_projects_own_rules():
    left_out = checkov_gate().NOT_FOR_CHECKOV
    assert left_out, "nothing is left out: drop this test and NOT_FOR_CHECKOV"
    for path in left_out:
        assert (ROOT / path).exists(), path
        module = path.removeprefix("infra/")
        assert any(mutated.endswith(module) for case in MUTATIONS for mutated, _, _ in case.values[0]), (
            f"{path}: no invariant of this file checks it"
        )
