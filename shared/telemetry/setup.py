"""Turning telemetry on: the Azure Monitor distro in Azure, given providers in tests and the bench.

In Azure (Microsoft's "Use OpenTelemetry with Azure Functions", Python): host.json has
`"telemetryMode": "OpenTelemetry"`, so the host exports its own request and dependency telemetry as
OpenTelemetry; the app setting `PYTHON_ENABLE_OPENTELEMETRY=true` lets the worker stream the app's
own telemetry (no duplicate host entries) and makes the host's request the current trace context of
each invocation; and the app calls `configure_azure_monitor()` itself, rather than letting the worker
do it (`PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY`), because local authentication is off on the
Application Insights resource: the exporter must send with the managed identity's Entra token, and
only the app can hand the distro that credential.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from shared.settings import telemetry_settings
from shared.telemetry import outbound
from shared.telemetry.switch import active, set_active

log = logging.getLogger(__name__)
_lock = threading.Lock()


def configure(environ: Mapping[str, str] | None = None) -> bool:
    """Export to Application Insights if a connection string is set; else nothing (and nothing of
    OpenTelemetry is imported). True when telemetry is on. Safe to call more than once."""
    settings = telemetry_settings(environ)
    if settings.connection_string is None:
        return False
    with _lock:
        if active():
            return True
        from azure.monitor.opentelemetry import configure_azure_monitor

        credential = None
        if settings.entra_auth:
            from azure.identity import ManagedIdentityCredential

            client_id = settings.managed_identity_client_id
            credential = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
        # Every trace kept unless the operator chose a sampler (OTEL_TRACES_SAMPLER): the distro's own
        # default is 5 traces a second, which drops the first ones of a quiet app and parts of a
        # campaign's burst, the calls an operator most wants to see. Volume is a few spans per upgrade.
        sampling = {} if settings.sampler_chosen else {"sampling_ratio": 1.0}
        configure_azure_monitor(
            connection_string=settings.connection_string,
            credential=credential,
            **sampling,
            # `requests` is instrumented below, with the Partner Center hooks; everything else as the distro does.
            instrumentation_options={"requests": {"enabled": False}},
        )
        instrument_libraries()
        set_active(True)
    log.info("telemetry.configured exporter=azure-monitor entra_auth=%s", settings.entra_auth)
    return True


def activate(tracer_provider: Any, meter_provider: Any) -> None:
    """Tests and the bench: these providers (e.g. with in-memory exporters) become the global ones
    (OpenTelemetry sets each once per process) and telemetry is on, instrumented as in Azure."""
    from opentelemetry import metrics, trace

    with _lock:
        if trace.get_tracer_provider() is not tracer_provider:
            trace.set_tracer_provider(tracer_provider)
        if metrics.get_meter_provider() is not meter_provider:
            metrics.set_meter_provider(meter_provider)
        instrument_libraries()
        set_active(True)


def deactivate() -> None:
    """Off again (tests): no more spans or metrics from the app or its libraries."""
    with _lock:
        set_active(False)
        from azure.core.settings import settings
        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        RequestsInstrumentor().uninstrument()
        settings.tracing_implementation = None


def instrument_libraries() -> None:
    """`requests` with the Partner Center hooks (Partner Center, Entra, callbacks) and azure-core's
    tracing (Key Vault, Table Storage), the latter as the distro sets it."""
    from azure.core.settings import settings
    from azure.core.tracing.ext.opentelemetry_span import OpenTelemetrySpan
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    instrumentor = RequestsInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(request_hook=outbound.request_hook, response_hook=outbound.response_hook)
    settings.tracing_implementation = OpenTelemetrySpan
