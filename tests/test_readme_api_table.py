"""README's "API at a glance" table is true: every status it names for a route is one that route
answers, shown here by a real scenario against the sandbox (issue 20: the table said retry answers
`200`; it answers `202`). A status the README names with no scenario below fails the test: add the
scenario, or correct the README."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.runtime import reset_runtime

from .conftest import Api

ROOT = Path(__file__).resolve().parent.parent
QUEUE = {"Prefer": "respond-async"}


def readme_table() -> dict[tuple[str, str], set[int]]:
    """(method, route without its query) -> the statuses its Answers cell names."""
    section = (ROOT / "README.md").read_text().split("## API at a glance", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(GET|POST|PUT|DELETE) (/api/[^`?]+)[^`]*` \| .+? \| (.+) \|$", section, re.M)
    return {(method, route): {int(s) for s in re.findall(r"`(\d{3})`", answers)} for method, route, answers in rows}


def request_path(request_id: str, action: str = "") -> dict[str, object]:
    return {
        "path": f"product-upgrade-requests/{request_id}" + (f"/{action}" if action else ""),
        "route_params": {"requestId": request_id},
    }


class Scenarios:
    """Each method answers one README row's status with a real request (sandbox customers set the
    way Partner Center would behave)."""

    def __init__(self, api: Api, sandbox, monkeypatch) -> None:
        self.api, self.sandbox, self.monkeypatch = api, sandbox, monkeypatch

    def customer(self, **scenario) -> str:
        customer = str(uuid.uuid4())
        if scenario:
            self.sandbox.customers.set(customer, **scenario)
        return customer

    def request_id(self, **scenario) -> str:
        return self.api.upgrade(self.customer(**scenario)).json()["requestId"]

    def final_request(self, outcome: str) -> str:
        request_id = self.request_id(outcome=outcome, status_polls_until_final=1)
        reply = self.api.request_status(request_id)
        assert reply.status == 200, reply.body
        return request_id

    def call(self, name: str, method: str, request_id: str, action: str = "", body=None):
        where = request_path(request_id, action)
        return self.api.call(name, method, where["path"], route_params=where["route_params"], json_body=body)

    def table(self) -> dict[tuple[str, str], dict[int, Callable[[], object]]]:
        api = self.api
        upgrade = ("POST", "/api/product-upgrades")
        return {
            upgrade: {
                202: lambda: api.upgrade(self.customer()),
                422: lambda: api.upgrade(self.customer(eligible=False)),
                403: lambda: self._refused_create(403, code=20002),
                404: lambda: self._refused_create(404),
            },
            ("GET", "/api/product-upgrade-requests"): {
                200: lambda: api.call("list_product_upgrade_requests", "GET", "product-upgrade-requests"),
                400: lambda: api.call(
                    "list_product_upgrade_requests",
                    "GET",
                    "product-upgrade-requests",
                    params={"continuationToken": "forged"},
                ),
            },
            ("GET", "/api/product-upgrade-requests/summary"): {
                200: lambda: api.call("get_product_upgrade_request_summary", "GET", "product-upgrade-requests/summary"),
            },
            ("POST", "/api/product-upgrade-requests/{requestId}/cancel"): {
                200: lambda: self.call(
                    "cancel_product_upgrade_request",
                    "POST",
                    api.upgrade(self.customer(), headers=QUEUE).json()["requestId"],
                    "cancel",
                ),
                409: lambda: self.call(
                    "cancel_product_upgrade_request", "POST", self.final_request("complete"), "cancel"
                ),
            },
            ("POST", "/api/product-upgrade-requests/{requestId}/retry"): {
                202: lambda: self.call("retry_product_upgrade_request", "POST", self.final_request("failed"), "retry"),
                409: lambda: self.call(
                    "retry_product_upgrade_request", "POST", self.final_request("complete"), "retry"
                ),
            },
            ("GET", "/api/product-upgrade-requests/{requestId}"): {
                202: lambda: api.request_status(self.request_id(outcome="in_progress")),
                200: lambda: api.request_status(self.final_request("complete")),
            },
            ("PUT", "/api/product-upgrade-requests/{requestId}/callback"): {
                200: lambda: self.call(
                    "put_product_upgrade_callback",
                    "PUT",
                    self.request_id(outcome="in_progress"),
                    "callback",
                    {"url": self._reachable_callback_url()},
                ),
            },
            ("DELETE", "/api/product-upgrade-requests/{requestId}/callback"): {
                204: lambda: self.call(
                    "delete_product_upgrade_callback", "DELETE", self.request_id(outcome="in_progress"), "callback"
                ),
            },
            ("GET", "/api/product-upgrades/{upgradeId}"): {
                200: lambda: self._upgrade_status(known=True),
                404: lambda: self._upgrade_status(known=False),
            },
            ("POST", "/api/product-upgrades/eligibility"): {
                200: lambda: api.eligibility(self.customer()),
            },
            ("POST", "/api/campaigns"): {
                202: lambda: self._create_campaign(),
                400: lambda: self._create_campaign(["not-a-guid"]),
            },
            ("GET", "/api/campaigns"): {200: lambda: api.call("list_campaigns", "GET", "campaigns")},
            ("GET", "/api/campaigns/{campaignId}"): {
                200: lambda: self._campaign("get_campaign", "GET", self._campaign_id()),
                404: lambda: self._campaign("get_campaign", "GET", str(uuid.uuid4())),
            },
            ("POST", "/api/campaigns/{campaignId}/start"): {
                200: lambda: self._campaign("start_campaign", "POST", self._ready_campaign_id(), "start"),
                409: lambda: self._campaign("start_campaign", "POST", self._campaign_id(), "start"),  # assessing
            },
            ("POST", "/api/campaigns/{campaignId}/pause"): {
                200: lambda: self._campaign("pause_campaign", "POST", self._campaign_id(), "pause"),
                409: lambda: self._campaign("pause_campaign", "POST", self._cancelled_campaign_id(), "pause"),
            },
            ("POST", "/api/campaigns/{campaignId}/resume"): {
                200: lambda: self._campaign("resume_campaign", "POST", self._paused_campaign_id(), "resume"),
                409: lambda: self._campaign("resume_campaign", "POST", self._campaign_id(), "resume"),
            },
            ("POST", "/api/campaigns/{campaignId}/cancel"): {
                200: lambda: self._campaign("cancel_campaign", "POST", self._campaign_id(), "cancel"),
            },
            ("GET", "/api/campaigns/{campaignId}/members"): {
                200: lambda: self._campaign("list_campaign_members", "GET", self._campaign_id(), "members"),
            },
            ("GET", "/api/campaigns/{campaignId}/report"): {
                200: lambda: self._campaign("get_campaign_report", "GET", self._campaign_id(), "report"),
            },
        }

    def _create_campaign(self, customers: list[str] | None = None):
        body = {"name": "readme", "customers": customers or [str(uuid.uuid4())]}
        return self.api.call("create_campaign", "POST", "campaigns", json_body=body)

    def _campaign_id(self) -> str:
        return self._create_campaign().json()["campaignId"]

    def _campaign(self, name: str, method: str, campaign_id: str, action: str = ""):
        path = f"campaigns/{campaign_id}" + (f"/{action}" if action else "")
        return self.api.call(name, method, path, route_params={"campaignId": campaign_id})

    def _ready_campaign_id(self) -> str:
        from .test_campaign import run_timer

        campaign_id = self._campaign_id()
        run_timer()  # assessment: the campaign is `ready`
        return campaign_id

    def _paused_campaign_id(self) -> str:
        campaign_id = self._campaign_id()
        assert self._campaign("pause_campaign", "POST", campaign_id, "pause").status == 200
        return campaign_id

    def _cancelled_campaign_id(self) -> str:
        campaign_id = self._campaign_id()
        assert self._campaign("cancel_campaign", "POST", campaign_id, "cancel").status == 200
        return campaign_id

    def _reachable_callback_url(self) -> str:
        """An https URL the SSRF guard accepts offline (a loopback one, allowed for this test)."""
        self.monkeypatch.setenv("CALLBACK_ALLOW_PRIVATE_NETWORKS", "true")
        reset_runtime()
        return "https://127.0.0.1:9/done"

    def _refused_create(self, status: int, **fault):
        """Partner Center refuses the create with `status` (no relationship, unknown customer)."""
        self.sandbox.faults.add("create_upgrade", "status", status=status, **fault)
        return self.api.upgrade(self.customer())

    def _upgrade_status(self, *, known: bool):
        customer = self.customer(outcome="in_progress")
        upgrade_id = self.api.upgrade(customer).json()["upgradeId"] if known else str(uuid.uuid4())
        return self.api.upgrade_status(upgrade_id, customer)


ROWS = sorted((route, status) for route, statuses in readme_table().items() for status in statuses)


def test_the_readme_table_is_read_and_every_route_has_a_row():
    source = (ROOT / "function_app.py").read_text()
    routes = re.findall(r'@app\.route\(route="([^"]+)", methods=\["([A-Z]+)"\]\)', source)
    assert len(routes) >= 10
    assert set(readme_table()) == {(method, f"/api/{route}") for route, method in routes}


@pytest.mark.parametrize(("route", "status"), ROWS, ids=[f"{m} {r} {s}" for (m, r), s in ROWS])
def test_every_status_the_readme_names_is_one_the_route_answers(route, status, api, sandbox, monkeypatch):
    scenarios = Scenarios(api, sandbox, monkeypatch).table()
    assert route in scenarios, f"README names {route}: add its scenarios here"
    assert status in scenarios[route], f"README says {route} answers {status}; no scenario makes it do so"
    reply = scenarios[route][status]()
    assert reply.status == status, (route, reply.status, reply.body[:300])
    reset_runtime()
