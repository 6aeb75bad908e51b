"""The campaign workbook (infra/workbooks): deployed by infra, and every field its queries use is
one the code actually logs, so renaming a log key cannot silently blank a chart."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKBOOK = ROOT / "infra" / "workbooks" / "upgrade-campaign.workbook.json"
EVENT = re.compile(r'message startswith "([\w.]+) ?"')
PARSED = re.compile(r"parse-kv message as \(([^)]*)\)")
IN_LIST = re.compile(r"where event in \(([^)]*)\)")


def logged_events() -> dict[str, set[str]]:
    """Every log format string in shared/ that starts with an event name: event -> its keys."""
    events: dict[str, set[str]] = {}
    for path in (ROOT / "shared").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in ("debug", "info", "warning", "error", "exception") or not node.args:
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                text = first.value
                match = re.match(r"([a-z_]+\.[a-z_]+)( |$)", text)
                if match:
                    events.setdefault(match.group(1), set()).update(re.findall(r"(\w+)=%", text))
    return events


def all_queries() -> list[tuple[str, str]]:
    document = json.loads(WORKBOOK.read_text())
    return [(item["name"], item["content"]["query"]) for item in document["items"] if item["type"] == 3]


def queries() -> list[tuple[str, str]]:
    """The views over the app's log lines (traces)."""
    return [(name, query) for name, query in all_queries() if query.startswith("traces")]


def telemetry_queries() -> list[tuple[str, str]]:
    """The views over its OpenTelemetry spans (dependencies) and metrics (customMetrics)."""
    return [(name, query) for name, query in all_queries() if not query.startswith("traces")]


def created_metrics() -> set[str]:
    """Every metric shared/telemetry/metrics.py creates (meter.create_*("name", ...))."""
    tree = ast.parse((ROOT / "shared" / "telemetry" / "metrics.py").read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr.startswith("create_")
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def telemetry_problems(query: str, metrics: set[str], dimensions: set[str], span_prefixes: set[str]) -> list[str]:
    """What a telemetry view asks for that the code does not emit."""
    problems = []
    table = query.split("\n", 1)[0].strip()
    if table == "customMetrics":
        for listed in re.findall(r"name in \(([^)]*)\)", query):
            names = {name.strip().strip('"') for name in listed.split(",")}
            problems += [f"metric {name!r} is not created" for name in sorted(names - metrics)]
    elif table == "dependencies":
        prefixes = set(re.findall(r'name startswith "([^"]+)"', query))
        problems += [f"no span is named {prefix!r}..." for prefix in sorted(prefixes - span_prefixes)]
    else:
        problems.append(f"unknown table {table!r}")
    used = set(re.findall(r'customDimensions\["([\w.]+)"\]', query))
    problems += [f"attribute {name!r} is never set" for name in sorted(used - dimensions)]
    return problems


def emitted() -> tuple[set[str], set[str], set[str]]:
    from shared.telemetry import attributes

    dimensions = {value for name, value in vars(attributes).items() if name.isupper() and isinstance(value, str)}
    outbound = (ROOT / "shared" / "telemetry" / "outbound.py").read_text()
    prefixes = {prefix + " " for prefix in re.findall(r'span\.update_name\(f?"([A-Z][\w ]*?) ?[{"]', outbound)}
    return created_metrics(), dimensions, prefixes


def fields_used(query: str) -> list[str]:
    return [f.split(":")[0].strip() for match in PARSED.findall(query) for f in match.split(",") if f.strip()]


def events_of(query: str, logged: dict[str, set[str]]) -> list[str]:
    (prefix,) = EVENT.findall(query)
    named = [name.strip().strip('"') for match in IN_LIST.findall(query) for name in match.split(",")]
    if named:
        return named
    return [prefix] if prefix in logged else [event for event in logged if event.startswith(prefix)]


def test_the_workbook_covers_the_dashboard_the_issue_asks_for():
    titles = " | ".join(json.loads(WORKBOOK.read_text())["items"][i]["content"].get("title", "") for i in range(6))
    for wanted in ("outcome", "Failures by reason", "latency", "429", "Timer runs", "Callback"):
        assert wanted in titles


@pytest.mark.parametrize(("name", "query"), queries(), ids=[name for name, _ in queries()])
def test_every_field_a_query_uses_is_logged_by_the_code(name: str, query: str):
    logged = logged_events()
    events = events_of(query, logged)
    assert events, f"{name}: no logged event matches the query"
    for event in events:
        assert event in logged, f"{name}: the code never logs {event!r}"
        missing = set(fields_used(query)) - logged[event]
        assert not missing, f"{name}: {event} does not log {sorted(missing)}"


def test_the_check_notices_a_renamed_log_key():
    logged = logged_events()
    renamed = {**logged, "partner_center.call": logged["partner_center.call"] - {"duration_ms"}}
    query = dict(queries())["latency"]
    assert set(fields_used(query)) - renamed["partner_center.call"] == {"duration_ms"}


def test_infra_deploys_the_workbook_over_application_insights():
    module = (ROOT / "infra" / "modules" / "workbook.bicep").read_text()
    assert "'Microsoft.Insights/workbooks@" in module
    assert "loadTextContent('../workbooks/upgrade-campaign.workbook.json')" in module
    assert "sourceId: applicationInsightsId" in module
    main = (ROOT / "infra" / "main.bicep").read_text()
    assert "module workbook 'modules/workbook.bicep'" in main
    assert "applicationInsightsId: monitoring.outputs.applicationInsightsId" in main


@pytest.mark.parametrize(("name", "query"), telemetry_queries(), ids=[name for name, _ in telemetry_queries()])
def test_every_metric_span_and_attribute_a_telemetry_view_uses_is_emitted(name: str, query: str):
    assert telemetry_problems(query, *emitted()) == []


def test_the_telemetry_views_show_partner_center_latency_429s_and_the_backlog():
    titles = " | ".join(json.loads(WORKBOOK.read_text())["items"][i]["content"].get("title", "") for i in range(-3, 0))
    for wanted in ("Partner Center latency", "429s", "backlog"):
        assert wanted in titles


def test_the_telemetry_check_notices_a_renamed_metric_or_attribute():
    metrics, dimensions, prefixes = emitted()
    query = dict(telemetry_queries())["otel-outcomes"]
    assert telemetry_problems(query, metrics - {"partner_center.throttled"}, dimensions, prefixes) == [
        "metric 'partner_center.throttled' is not created"
    ]
    assert telemetry_problems(query, metrics, dimensions - {"upgrade.outcome"}, prefixes) == [
        "attribute 'upgrade.outcome' is never set"
    ]
    spans = dict(telemetry_queries())["otel-partner-center"]
    assert telemetry_problems(spans, metrics, dimensions, set()) == ["no span is named 'Partner Center '..."]
