"""The table's layout version (issue 18, defect 7): a table written by another layout is refused by
every route and the CLI with a `storage-layout` problem that names the fix, nothing read or
written; `python -m shared.cli migrate` moves a layout 1 table, after which the app reads it.

Before the fix: a layout 1 or 0 table was read as empty: `assert 404 == 503` for GET of a stored
request, and a new POST for its customer was accepted (`assert 202 == 503`) while the first
request may have landed."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared.identifiers import new_guid
from shared.upgrade_requests.record import CANCELLED, PENDING, new_record, utc_now
from shared.upgrade_requests.store import LAYOUT_VERSION, new_request_id

from .conftest import Api
from .layout_v1 import write_v0_request, write_v1_request
from .test_campaign import QUEUE, cli

LAYOUT_PROBLEM = "urn:product-upgrades:problem:storage-layout"


@pytest.fixture
def raw_table(app_env: dict[str, str]) -> Any:
    """The app's table, created before the app first touches it."""
    service = TableServiceClient.from_connection_string(app_env["AzureWebJobsStorage"])
    return service.create_table(app_env["UPGRADE_REQUESTS_TABLE"])


def a_request(state: str = PENDING) -> Any:
    customer = str(uuid.uuid4())
    record = new_record(new_request_id(customer), customer, "Azure", new_guid(), new_guid(), state=PENDING)
    return record if state == PENDING else record.evolve(state=state, finished_at=utc_now())


def cli_err(capsys: Any, *args: str) -> tuple[int, str]:
    from shared.cli.__main__ import main

    code = main(["--settings", "/nonexistent.json", *args])
    return code, capsys.readouterr().err


def entities(table: Any) -> list[dict[str, Any]]:
    return sorted((dict(e) for e in table.list_entities()), key=lambda e: (e["PartitionKey"], e["RowKey"]))


def test_a_layout_1_table_is_refused_by_every_route_and_nothing_is_written(api: Api, raw_table):
    active = a_request()
    write_v1_request(raw_table, active, key="row-1")
    before = entities(raw_table)

    replies = [
        api.request_status(active.request_id),
        api.upgrade(active.customer_id, headers=QUEUE),
        api.upgrade(str(uuid.uuid4())),
        api.call("list_product_upgrade_requests", "GET", "product-upgrade-requests"),
    ]
    for reply in replies:
        assert reply.status == 503, reply.body
        problem = reply.json()
        assert problem["type"] == LAYOUT_PROBLEM and problem["status"] == 503
        assert "python -m shared.cli migrate" in problem["detail"] and "layout 1" in problem["detail"]
        assert (problem["layoutFound"], problem["layoutExpected"]) == (1, LAYOUT_VERSION)
    assert entities(raw_table) == before, "a refused table was written to"


def test_the_cli_refuses_a_layout_1_table_with_the_operator_exit_code(app_env, raw_table, capsys):
    write_v1_request(raw_table, a_request())
    code, err = cli_err(capsys, "list")
    assert code == 5
    assert "python -m shared.cli migrate" in err


def test_migrate_moves_a_layout_1_table_and_the_app_then_reads_all_of_it(api: Api, raw_table, capsys):
    active, final = a_request(), a_request(CANCELLED)
    write_v1_request(raw_table, active, key="row-1")
    write_v1_request(raw_table, final, key="row-2")

    code, out = cli(capsys, "migrate")
    assert code == 0 and "moved from layout 1 to 2: 2 idempotency key(s) moved" in out, out

    assert api.request_status(active.request_id).json()["status"] == PENDING
    assert api.request_status(final.request_id).json()["status"] == CANCELLED
    # The lock of the layout 1 request still holds, and its key still answers it.
    again = api.upgrade(active.customer_id, headers=QUEUE)
    assert again.json()["requestId"] == active.request_id
    replay = api.upgrade(active.customer_id, headers={"Idempotency-Key": "row-1", **QUEUE})
    assert replay.json()["requestId"] == active.request_id and replay.headers.get("idempotent-replayed") == "true"
    assert not [e for e in entities(raw_table) if e["PartitionKey"] == "idempotency"]

    code, out = cli(capsys, "migrate")
    assert code == 0 and "already at layout 2" in out


def test_a_layout_0_table_is_refused_and_migrate_says_it_cannot_move_it(api: Api, raw_table, capsys):
    old = a_request()
    write_v0_request(raw_table, old)
    reply = api.request_status(old.request_id)
    assert reply.status == 503 and reply.json()["type"] == LAYOUT_PROBLEM
    assert "layout 0" in reply.json()["detail"] and "UPGRADE_REQUESTS_TABLE" in reply.json()["detail"]
    code, err = cli_err(capsys, "migrate")
    assert code == 5
    assert "cannot be migrated" in err


def test_a_new_table_is_marked_with_this_layout_on_first_use(api: Api, customer_id, app_env):
    assert api.upgrade(customer_id, headers=QUEUE).status == 202
    service = TableServiceClient.from_connection_string(app_env["AzureWebJobsStorage"])
    marker = service.get_table_client(app_env["UPGRADE_REQUESTS_TABLE"]).get_entity("meta", "layout")
    assert marker["Version"] == LAYOUT_VERSION
