"""The request pipeline: route, apply faults, throttle and latency, call the service, record, answer.

Kept apart from the socket code so the order of effects is in one place, because that order is
what tests rely on: a call is recorded (and an upgrade counted) *before* any byte of the answer
is sent, and the "process_then_*" faults change state first and lose the answer afterwards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from . import partner_center
from .recorder import RecordedCall
from .routes import CONTROL, Match, RouteTable
from .wire import Request, Response

if TYPE_CHECKING:
    from .faults import FaultAction
    from .state import SandboxState

log = logging.getLogger(__name__)
UNROUTED = "unrouted"


class Channel(Protocol):
    """How the dispatcher answers: send a response, or drop the connection without one."""

    def send(self, response: Response) -> None: ...

    def reset(self) -> None: ...

    def trickle(self, response: Response, seconds_per_byte: float, wait: Callable[[float], bool]) -> None: ...


class Dispatcher:
    """Serves requests for one server (one route table) against the shared state."""

    def __init__(self, state: SandboxState, routes: RouteTable) -> None:
        self._state = state
        self._routes = routes

    def handle(self, request: Request, channel: Channel) -> None:
        arrived = time.time()
        match = self._routes.match(request.method, request.path)
        if match is None:
            status = 405 if self._routes.path_known(request.path) else 404
            response = Response.json(
                status,
                {
                    "error": {
                        "code": "NotFound" if status == 404 else "MethodNotAllowed",
                        "message": f"No sandbox route for {request.method} {request.path}",
                    }
                },
            )
            self._record(request, UNROUTED, UNROUTED, arrived, status)
            channel.send(response)
            return
        if match.route.service == CONTROL:
            channel.send(self._invoke(match, request))
            return
        self._serve(match, request, channel, arrived)

    def _serve(self, match: Match, request: Request, channel: Channel, arrived: float) -> None:
        route, state = match.route, self._state
        fault = state.faults.take(route.service, route.operation)
        if fault is not None and fault.kind == "reset":
            self._record(request, route.service, route.operation, arrived, 0, fault)
            channel.reset()
            return
        if fault is not None and fault.kind == "status":
            response = self._fault_response(match, request, fault)
            self._record(request, route.service, route.operation, arrived, response.status, fault)
            channel.send(response)
            return
        if fault is not None and fault.kind == "land_late":
            # Unanswered now; processed when the test lands it (`SandboxState.land_late`).
            self._record(request, route.service, route.operation, arrived, 0, fault)
            state.park(lambda: self._invoke(match, request))
            channel.reset()
            return
        if fault is not None and fault.kind == "delay" and state.wait(fault.seconds):
            channel.reset()
            return
        if route.service == "partner_center":
            # Partner Center's throttle answers at once, before any latency or processing.
            wait = state.throttle.admit()
            if wait is not None:
                response = partner_center.throttled(request, wait)
                self._record(request, route.service, route.operation, arrived, response.status)
                channel.send(response)
                return
        # Latency is spent before processing: a client that gives up during it changed nothing.
        if route.service == "partner_center" and state.wait(state.latency):
            channel.reset()
            return
        response = self._invoke(match, request)
        self._record(request, route.service, route.operation, arrived, response.status, fault, response.replayed)
        if fault is not None and fault.kind == "process_then_reset":
            channel.reset()
        elif fault is not None and fault.kind == "process_without_location":
            response.headers.pop("Location", None)
            channel.send(response)
        elif fault is not None and fault.kind == "trickle":
            channel.trickle(response, fault.seconds, state.wait)
        elif fault is not None and fault.kind == "process_then_hang":
            if state.wait(fault.seconds):
                channel.reset()
            else:
                channel.send(response)
        else:
            channel.send(response)

    def _invoke(self, match: Match, request: Request) -> Response:
        try:
            return match.route.handler(request, self._state, **match.params)
        except Exception:  # a sandbox bug must surface as a 500, not a dead connection
            log.exception("sandbox handler failed for %s %s", request.method, request.path)
            return Response.json(500, {"error": {"code": "SandboxError", "message": "sandbox handler crashed"}})

    def _fault_response(self, match: Match, request: Request, fault: FaultAction) -> Response:
        if "body" in fault.params:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return Response.json(fault.status, fault.params["body"], extra)
        if match.route.on_fault is None:
            return Response.json(fault.status, {"error": "injected fault"})
        return match.route.on_fault(request, fault, self._state)

    def _record(
        self,
        request: Request,
        service: str,
        operation: str,
        arrived: float,
        status: int,
        fault: FaultAction | None = None,
        replayed: bool = False,
    ) -> None:
        self._state.calls.append(
            RecordedCall(
                service=service,
                operation=operation,
                method=request.method,
                path=request.path,
                headers=request.headers,
                body=request.body,
                at=arrived,
                status=status,
                query={key: list(values) for key, values in request.query.items()},
                fault=fault.kind if fault else None,
                replayed=replayed,
            )
        )
