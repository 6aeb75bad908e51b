"""The Power Automate connector definition: valid OpenAPI 2.0, and in step with function_app.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from .conftest import registered_functions

CONNECTOR = Path(__file__).resolve().parent.parent / "connector"
SPEC = json.loads((CONNECTOR / "apiDefinition.swagger.json").read_text())
METHODS = ("get", "post", "put", "delete", "patch")


def http_routes() -> set[tuple[str, str]]:
    routes = set()
    for function in registered_functions().values():
        trigger = function.get_trigger().get_dict_repr()
        if trigger["type"] == "httpTrigger":
            for method in trigger["methods"]:
                routes.add((str(getattr(method, "value", method)).lower(), "/" + trigger["route"]))
    return routes


def operations():
    for path, item in SPEC["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_definition_is_valid_openapi_2():
    assert SPEC["swagger"] == "2.0"
    validate(SPEC)


def test_every_route_has_an_operation_and_every_operation_a_route():
    assert {(method, path) for path, method, _ in operations()} == http_routes()


@pytest.mark.parametrize(
    ("path", "method", "operation"), list(operations()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_operation_is_complete_for_flow_makers(path, method, operation):
    assert re.fullmatch(r"[A-Z][A-Za-z]+", operation["operationId"])
    assert operation["summary"] and operation["description"]
    assert operation.get("x-ms-visibility") in ("important", "advanced", "internal", None)
    path_params = set(re.findall(r"\{(\w+)\}", path))
    declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
    assert declared == path_params
    for parameter in operation["parameters"]:
        assert parameter.get("x-ms-summary"), parameter["name"]
        assert parameter.get("description"), parameter["name"]
    if method in ("post", "put"):
        assert any(p["in"] == "body" for p in operation["parameters"])
    success = {code: response for code, response in operation["responses"].items() if code.startswith("2")}
    assert success
    for code, response in success.items():
        if code != "204":
            assert "schema" in response, f"{method} {path} {code}"


def test_operation_ids_are_unique():
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))


def test_auth_is_oauth_with_entra_for_the_apps_application_id_uri():
    """Each flow connection signs its user in (identity provider `aad`); the token's audience is
    the API's Application ID URI, one of the app's CALLER_AUDIENCES."""
    assert SPEC["security"] == [{"oauth2_auth": []}]
    assert SPEC["securityDefinitions"]["oauth2_auth"]["type"] == "oauth2"
    assert SPEC["securityDefinitions"]["oauth2_auth"]["flow"] == "accessCode"
    oauth = json.loads((CONNECTOR / "apiProperties.json").read_text())["properties"]["connectionParameters"]["token"]
    assert oauth["type"] == "oauthSetting"
    settings = oauth["oAuthSettings"]
    assert settings["identityProvider"] == "aad"
    example = json.loads((CONNECTOR.parent / "local.settings.example.json").read_text())["Values"]
    resource = settings["customParameters"]["resourceUri"]["value"]
    assert resource in example["CALLER_AUDIENCES"].split(",")
    assert settings["properties"]["AzureActiveDirectoryResourceId"] == resource


FUNCTION_KEY_SCHEME = {"type": "apiKey", "in": "header", "name": "x-functions-key"}


def function_key_variant(spec: dict) -> dict:
    """What docs/security.md's jq line makes of the definition for CALLER_AUTH=function-key."""
    return {**spec, "securityDefinitions": {"api_key": FUNCTION_KEY_SCHEME}, "security": [{"api_key": []}]}


def test_function_key_variant_is_valid_and_matches_its_properties():
    validate(function_key_variant(SPEC))
    properties = json.loads((CONNECTOR / "function-key" / "apiProperties.json").read_text())["properties"]
    assert properties["connectionParameters"]["api_key"]["type"] == "securestring"
    docs = (CONNECTOR.parent / "docs" / "security.md").read_text()
    assert "x-functions-key" in docs and "function-key/apiProperties.json" in docs


def test_body_fields_match_what_the_api_accepts():
    from shared.api.upgrade_routes import ELIGIBILITY_FIELDS, UPGRADE_FIELDS

    upgrade = set(SPEC["definitions"]["UpgradeInput"]["properties"])
    assert upgrade == {*UPGRADE_FIELDS, "callbackUrl"}
    assert set(SPEC["definitions"]["EligibilityInput"]["properties"]) == set(ELIGIBILITY_FIELDS)


def test_record_schema_lists_every_field_the_api_returns():
    from shared.upgrade_requests.record import new_record

    record = new_record("r", "c", "Azure", "x", "m", state="pending")
    returned = set(record.public_view()) | {"statusUrl", "upgradeStatusUrl"}
    assert returned == set(SPEC["definitions"]["UpgradeRequest"]["properties"])


# --- Microsoft's published connector schemas (connector/schemas/, vendored with their source) ---

ROOT = CONNECTOR.parent
SCHEMAS = CONNECTOR / "schemas"


def published_schema(name: str) -> dict:
    """A vendored schema (JSON with // comments), with the one amendment upstream made after the
    vendored commit: `GlobalPerConnector` among the OAuth redirect modes (microsoft/
    PowerPlatformConnectors 7e2d88f, schemas/tests/test_api_properties.py `test_redirect_modes`);
    it is the per-connector redirect URI Microsoft asks new OAuth connectors to use."""
    import json5

    schema = json5.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    if name == "paconn-apiProperties.schema.json":
        modes = schema["definitions"]["oAuthSettings"]["properties"]["redirectMode"]["enum"]
        assert "GlobalPerConnector" not in modes, "the vendored schema has it now: drop this amendment"
        modes.append("GlobalPerConnector")
    return schema


def schema_errors(schema: dict, document: dict) -> list[str]:
    from jsonschema import validators

    errors = sorted(validators.validator_for(schema)(schema).iter_errors(document), key=lambda e: list(e.path))
    found = []
    for error in errors:
        where = "/".join(map(str, error.path))
        found.append(f"{where}: {error.message[:200]}")
        found += [f"{where}:   {'/'.join(map(str, c.schema_path))}: {c.message[:200]}" for c in error.context]
    return found


@pytest.mark.parametrize(
    ("document", "schema"),
    [
        ("connector/apiProperties.json", "paconn-apiProperties.schema.json"),
        ("connector/function-key/apiProperties.json", "paconn-apiProperties.schema.json"),
        ("connector/apiDefinition.swagger.json", "apiDefinition.swagger.schema.json"),
    ],
)
def test_connector_files_follow_microsofts_published_schema(document, schema):
    errors = schema_errors(published_schema(schema), json.loads((ROOT / document).read_text()))
    assert not errors, "\n".join(errors[:20])


def test_the_schema_check_can_fail():
    """A property the aad identity provider does not take is caught (Microsoft's schema allows only
    resourceUri, loginUri and tenantId as its custom parameters: `enableOnbehalfOfLogin` was one)."""
    document = json.loads((ROOT / "connector" / "apiProperties.json").read_text())
    document["properties"]["connectionParameters"]["token"]["oAuthSettings"]["customParameters"][
        "enableOnbehalfOfLogin"
    ] = {"value": "false"}
    assert schema_errors(published_schema("paconn-apiProperties.schema.json"), document)
