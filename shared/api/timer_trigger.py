"""The timer trigger's body: one bounded run over the due requests."""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from shared.api.campaign_wiring import campaign_runner
from shared.runtime import get_runtime
from shared.telemetry import attributes, metrics, spans
from shared.upgrade_requests.timer_run import RunReport
from shared.upgrade_requests.timer_run import process_pending as run_pending

log = logging.getLogger(__name__)


def process_pending(timer: func.TimerRequest | None = None, context: func.Context | None = None) -> RunReport:
    """Run once now; errors are logged with context and re-raised so the host records a failure."""
    if timer is not None and timer.past_due:
        log.warning("pending.timer_past_due")
    with spans.timer_run("process_pending_requests") as span:
        runtime = get_runtime()
        settings = runtime.settings
        report = run_pending(
            runtime.processor,
            owner=runtime.owner,
            concurrency=settings.pending_concurrency,
            budget_seconds=settings.pending_run_seconds,
            thread_initializer=_invocation_binder(context),
            retention_days=settings.request_retention_days,
            campaigns=lambda until: campaign_runner(runtime).run(until).as_dict(),
        )
        span.set(
            {
                attributes.TIMER_DUE: report.due,
                attributes.TIMER_PENDING: report.pending_due,
                attributes.TIMER_OLDEST_PENDING_SECONDS: report.oldest_pending_seconds,
            }
        )
        metrics.timer_run(report.seconds, report.pending_due, report.oldest_pending_seconds)
        return report


def _invocation_binder(context: func.Context | None) -> Callable[[], None] | None:
    """The Python worker ties log lines to an invocation through thread-local storage; worker
    threads of our own pool must set it, or their lines never reach Application Insights."""
    if context is None:
        return None

    def bind() -> None:
        # The worker's own attribute, set on its thread-local object; typed loosely by azure-functions.
        context.thread_local_storage.invocation_id = context.invocation_id  # type: ignore[attr-defined]

    return bind
