"""Telemetry through OpenTelemetry (shared/telemetry), with the SDK's in-memory exporters: the spans
of a real upgrade against the sandbox and Azurite, their links and attributes, the metrics, trace
context and correlation, the secret scan of everything exported, and that nothing is set up (or
sent) without a connection string while the distro does export when one is set."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared.telemetry import attributes, setup

from .chaos_support import leaked, scanned_secrets
from .conftest import Api
from .test_requests import make_due, run_timer

ROOT = Path(__file__).resolve().parent.parent
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
CORRELATION_ID = "0d8a3c1e-6b1f-4c55-9a3e-2d8f7b6c5a41"


@dataclass
class Otel:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, value) of every data point of `metric` (cumulative since the process began)."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for candidate in scope.metrics:
                    if candidate.name == metric:
                        for point in candidate.data.data_points:
                            value = getattr(point, "value", None)
                            found.append((dict(point.attributes), value if value is not None else point.count))
        return found

    def total(self, metric: str, **where: Any) -> float:
        return sum(value for labels, value in self.points(metric) if all(labels.get(k) == v for k, v in where.items()))


@pytest.fixture(scope="session")
def otel_providers() -> Otel:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return Otel(tracer_provider, MeterProvider(metric_readers=[reader]), exporter, reader)


@pytest.fixture
def otel(otel_providers: Otel) -> Iterator[Otel]:
    """Telemetry on, as in Azure but exporting to memory; off again after the test."""
    setup.activate(otel_providers.tracer_provider, otel_providers.meter_provider)
    otel_providers.exporter.clear()
    yield otel_providers
    setup.deactivate()


def descends_from(span: ReadableSpan, ancestor: ReadableSpan, by_id: dict[int, ReadableSpan]) -> bool:
    parent = span.parent
    while parent is not None:
        if parent.span_id == ancestor.context.span_id:
            return True
        above = by_id.get(parent.span_id)
        parent = above.parent if above is not None else None
    return False


def test_a_warm_upgrade_is_one_trace_continuing_the_callers(api: Api, otel: Otel, sandbox, customer_id):
    api.upgrade(customer_id)  # cold: tokens and secrets are fetched once
    otel.exporter.clear()
    other = "5b2f8a9e-1c3d-4e5f-8a7b-9c0d1e2f3a4b"

    reply = api.upgrade(other, headers={"traceparent": TRACEPARENT, "MS-CorrelationId": CORRELATION_ID})

    assert reply.status == 202
    spans = otel.spans()
    by_id = {span.context.span_id: span for span in spans}
    assert {format(span.context.trace_id, "032x") for span in spans} == {TRACE_ID}
    (inbound,) = otel.named("submit_request")
    assert inbound.kind == SpanKind.SERVER
    assert format(inbound.parent.span_id, "016x") == PARENT_SPAN_ID
    assert inbound.attributes["http.response.status_code"] == 202
    assert inbound.attributes[attributes.CORRELATION_ID] == CORRELATION_ID
    (step,) = otel.named("upgrade request step")
    assert step.parent.span_id == inbound.context.span_id
    assert step.attributes[attributes.REQUEST_ID] == reply.json()["requestId"]
    assert step.attributes[attributes.CUSTOMER_ID] == other
    assert step.attributes[attributes.STATE_AFTER] == "submitted"
    (create,) = otel.named("Partner Center create")
    assert create.kind == SpanKind.CLIENT
    assert descends_from(create, step, by_id)
    (call,) = sandbox.calls("partner_center", "create_upgrade")[-1:]
    assert create.attributes[attributes.PC_REQUEST_ID] == call.headers["MS-RequestId"]
    assert create.attributes[attributes.CORRELATION_ID] == CORRELATION_ID == call.headers["MS-CorrelationId"]
    assert create.attributes[attributes.CUSTOMER_ID] == other
    assert create.attributes[attributes.PC_STATUS] == 202
    assert create.attributes[attributes.PC_RETRIES] == 0
    # Partner Center saw the same trace: the instrumentation sent it on.
    assert call.headers.get("traceparent", "").split("-")[1] == TRACE_ID
    # Table Storage through azure-core's tracing, inside the request.
    storage = [span for span in spans if span.name.startswith("TableClient.")]
    assert storage and all(descends_from(span, inbound, by_id) for span in storage)


def test_a_cold_call_traces_key_vault_and_entra(api: Api, otel: Otel, customer_id):
    reply = api.eligibility(customer_id)

    assert reply.status == 200
    spans = otel.spans()
    by_id = {span.context.span_id: span for span in spans}
    (inbound,) = otel.named("check_eligibility")
    vault = [span for span in spans if span.name.startswith("SecretClient.")]
    entra = otel.named("Entra token")
    (eligibility,) = otel.named("Partner Center eligibility")
    assert vault and entra
    assert all(descends_from(span, inbound, by_id) for span in [*vault, *entra, eligibility])
    # Without a caller's correlation id the app makes one: the span carries the one it answered with.
    assert inbound.attributes[attributes.CORRELATION_ID] == reply.headers["ms-correlationid"]
    assert eligibility.attributes[attributes.CORRELATION_ID] == reply.headers["ms-correlationid"]
    # No traceparent: the request starts its own trace.
    assert inbound.parent is None


def test_a_429_is_counted_and_on_the_span(api: Api, otel: Otel, sandbox, customer_id):
    throttled_before = otel.total("partner_center.throttled", **{attributes.PC_OPERATION: "create"})
    submitted_before = otel.total("upgrade_requests", **{attributes.OUTCOME: "submitted"})
    accepted_before = otel.total("upgrade_requests", **{attributes.OUTCOME: "accepted"})
    sandbox.faults.add("create_upgrade", "status", status=429, retry_after=1)

    assert api.upgrade(customer_id).status == 202

    assert otel.total("partner_center.throttled", **{attributes.PC_OPERATION: "create"}) == throttled_before + 1
    assert otel.total("upgrade_requests", **{attributes.OUTCOME: "accepted"}) == accepted_before + 1
    assert otel.total("upgrade_requests", **{attributes.OUTCOME: "submitted"}) == submitted_before + 1
    (create,) = otel.named("Partner Center create")
    assert create.attributes[attributes.PC_RETRIES] == 1
    assert create.attributes[attributes.PC_THROTTLED] == 1
    durations = [labels for labels, count in otel.points("partner_center.duration") if count]
    assert {attributes.PC_OPERATION: "create", attributes.PC_STATUS: 202} in durations


def test_a_refusal_carries_partner_centers_status_error_code_and_retry_after(
    api: Api, otel: Otel, sandbox, customer_id
):
    sandbox.faults.add("create_upgrade", "status", status=429, retry_after=30)  # beyond the inline budget
    rejected_before = otel.total("upgrade_requests", **{attributes.OUTCOME: "rejected"})

    reply = api.upgrade(customer_id)

    (create,) = otel.named("Partner Center create")
    assert create.attributes[attributes.PC_STATUS] == 429
    assert create.attributes[attributes.PC_RETRY_AFTER] == 30
    assert create.attributes[attributes.PC_THROTTLED] == 1
    assert reply.status in (202, 429, 503)
    sandbox.faults.clear()
    sandbox.faults.add("create_upgrade", "status", status=400, code="900105")  # not eligible: rejected
    other = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
    otel.exporter.clear()
    api.upgrade(other)
    (refused,) = otel.named("Partner Center create")
    assert refused.attributes[attributes.PC_STATUS] == 400
    assert refused.attributes[attributes.PC_ERROR_CODE] == "900105"
    assert otel.total("upgrade_requests", **{attributes.OUTCOME: "rejected"}) == rejected_before + 1


def test_a_timer_run_is_a_span_with_the_backlog_and_its_metrics(api: Api, otel: Otel, customer_id):
    request_id = api.upgrade(customer_id, headers={"Prefer": "respond-async"}).json()["requestId"]
    make_due(request_id)
    otel.exporter.clear()

    run_timer()

    spans = otel.spans()
    by_id = {span.context.span_id: span for span in spans}
    (run,) = otel.named("process_pending_requests")
    assert run.attributes[attributes.TIMER_PENDING] == 1
    assert run.attributes[attributes.TIMER_OLDEST_PENDING_SECONDS] >= 0
    (step,) = [
        span for span in otel.named("upgrade request step") if span.attributes[attributes.REQUEST_ID] == request_id
    ]
    assert descends_from(step, run, by_id)  # on the run's pool thread, in the run's trace
    assert descends_from(otel.named("Partner Center create")[0], step, by_id)
    assert [value for labels, value in otel.points("upgrade_requests.pending_due")] == [1]
    assert otel.total("timer_run.duration") >= 1


def test_no_span_or_metric_carries_a_secret(api: Api, otel: Otel, sandbox, customer_id):
    """Everything a run exports (cold and warm upgrades, eligibility, status, the timer), serialised
    as the exporter would send it, scanned with the log tests' scanner."""
    api.upgrade(customer_id)
    body = api.upgrade(customer_id).json()
    api.eligibility(customer_id)
    api.upgrade_status(body["upgradeId"], customer_id)
    api.request_status(body["requestId"])
    run_timer()
    sandbox.faults.add("create_upgrade", "status", status=429, retry_after=1)
    api.upgrade("2e4f6a8c-0b1d-4f3e-9a5c-7e9b1d3f5a7c")

    texts = [span.to_json() for span in otel.spans()] + [otel.reader.get_metrics_data().to_json()]
    secrets = scanned_secrets(sandbox)
    assert sandbox.issued_access_tokens and sandbox.issued_refresh_tokens  # the run did use tokens
    assert len(otel.spans()) > 20
    assert leaked(secrets, texts) == []
    # The scan finds a token where one is: it is not a check that cannot fail.
    token = next(iter(sandbox.issued_access_tokens))
    assert leaked(secrets, [*texts, json.dumps({"attributes": {"x": token}})]) == [token]


# --- off without a connection string; the distro exports with one ------------------------------------

PROBE = """
import json, sys
import function_app  # configures telemetry at import, as in Azure
from shared.telemetry import spans, switch
with spans.inbound_request("probe_function", "GET", "https://example.net/api/probe", {"traceparent": sys.argv[1]}):
    pass
print(json.dumps({
    "active": switch.active(),
    "opentelemetry_imported": any(name.startswith("opentelemetry") for name in sys.modules),
    "distro_imported": "azure.monitor.opentelemetry" in sys.modules,
}))
"""


def run_probe(env: dict[str, str]) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, TRACEPARENT],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_a_connection_string_nothing_is_set_up_or_sent():
    state = run_probe({})

    assert state == {"active": False, "opentelemetry_imported": False, "distro_imported": False}


class Ingestion(BaseHTTPRequestHandler):
    """A loopback stand-in for Application Insights' ingestion endpoint (and live metrics)."""

    received: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        Ingestion.received.append(f"{self.path} {body.decode(errors='replace')}")
        answer = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_with_a_connection_string_the_distro_exports_the_apps_spans():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingestion)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
    Ingestion.received.clear()
    try:
        state = run_probe(
            {
                "APPLICATIONINSIGHTS_CONNECTION_STRING": (
                    f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={endpoint};"
                    f"LiveEndpoint={endpoint}"
                ),
                # Keep everything on loopback: no statsbeat to Microsoft, no cloud metadata lookups.
                "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
                "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "azure_app_service",
            }
        )
    finally:
        server.shutdown()

    assert state == {"active": True, "opentelemetry_imported": True, "distro_imported": True}
    tracks = [text for text in Ingestion.received if "/track" in text]
    assert any("probe_function" in text and TRACE_ID in text for text in tracks), [t[:300] for t in Ingestion.received]


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        ("/v1/productUpgrades", "create"),
        ("/v1/productUpgrades/eligibility", "eligibility"),
        ("/v1/productUpgrades/0d8a3c1e-6b1f-4c55-9a3e-2d8f7b6c5a41/status", "status"),
        ("/v1/customers", "customers"),
        ("/v1/customers/0d8a3c1e-6b1f-4c55-9a3e-2d8f7b6c5a41/subscriptions", "customers"),
        ("/v1/invoices/0d8a3c1e-6b1f-4c55-9a3e-2d8f7b6c5a41", "/v1/invoices/{id}"),
    ],
)
def test_partner_center_operations_are_named_without_ids(path: str, operation: str):
    from shared.telemetry.outbound import operation_of

    assert operation_of(path) == operation


def test_a_campaign_is_a_dimension_where_a_request_has_one(otel: Otel):
    from shared.telemetry import metrics

    before = otel.total("upgrade_requests", **{attributes.CAMPAIGN_ID: "spring-2027"})
    metrics.request_outcome("accepted", "Azure", campaign_id="spring-2027")
    metrics.request_outcome("accepted", "Azure")

    assert otel.total("upgrade_requests", **{attributes.CAMPAIGN_ID: "spring-2027"}) == before + 1


def test_azure_runs_the_app_with_opentelemetry_as_documented():
    """host.json's telemetryMode, the worker setting, the distro in the lock: what Microsoft's
    "Use OpenTelemetry with Azure Functions" (Python) asks for; the connection string and Entra
    auth are test_infra.py's."""
    from .test_infra import app_settings, real_infra, render

    host = json.loads((ROOT / "host.json").read_text())
    assert host.get("telemetryMode") == "OpenTelemetry"
    _, values = app_settings(real_infra())
    assert render(values.get("PYTHON_ENABLE_OPENTELEMETRY")) == "true"
    assert "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY" not in values  # the worker's own setup has no credential
    assert any(
        line.startswith("azure-monitor-opentelemetry==")
        for line in (ROOT / "requirements.txt").read_text().splitlines()
    )


def test_a_replayed_request_is_not_counted_twice(api: Api, otel: Otel, customer_id):
    accepted = {attributes.OUTCOME: "accepted"}
    before = otel.total("upgrade_requests", **accepted)

    first = api.upgrade(customer_id, headers={"Idempotency-Key": "k-1"})
    again = api.upgrade(customer_id, headers={"Idempotency-Key": "k-1"})

    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["requestId"] == first.json()["requestId"]
    assert otel.total("upgrade_requests", **accepted) == before + 1
