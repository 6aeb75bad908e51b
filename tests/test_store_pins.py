"""Behaviour the store's survivors of issue 22's mutation run broke without a test noticing; each
test names the one-line bug it catches (the same bugs are mutants in mutation/mutants.py)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest

from shared.errors import InvalidRequest
from shared.upgrade_requests.record import FAILED, PENDING, utc_now
from shared.upgrade_requests.store import ListFilter

from .conftest import Api
from .test_campaign import QUEUE, list_call, make, store
from .test_store_races import interrupted_finalisation


def test_moving_an_older_request_never_deletes_the_lock_of_the_customers_newer_one(api: Api, customer_id):
    """Bug: the move releases the lock without checking that it names the request it moves."""
    older = interrupted_finalisation(customer_id)  # final, still holding the lock
    newer = api.upgrade(customer_id, headers=QUEUE).json()["requestId"]  # the stale lock is replaced
    assert newer != older
    assert store().repair() == 1  # the older request's move is finished now
    again = api.upgrade(customer_id, headers=QUEUE).json()
    assert again["requestId"] == newer, "the newer request lost its lock: a second request was accepted"


def test_a_retention_run_that_stops_at_its_batch_lets_the_next_run_go_on_at_once(app_env):
    """Bug: a full batch writes the 'caught up' marker, so a backlog waits an hour per batch."""
    old = utc_now() - timedelta(days=401)
    for _ in range(3):
        make(str(uuid.uuid4()), FAILED, created_at=old)
    every = timedelta(hours=1)
    cutoff = utc_now() - timedelta(days=400)
    assert store().purge_expired(cutoff, batch=2, at_most_every=every) == 2
    assert store().purge_expired(cutoff, batch=2, at_most_every=every) == 1
    assert store().purge_expired(cutoff, batch=2, at_most_every=every) == 0  # caught up: rests now
    make(str(uuid.uuid4()), FAILED, created_at=old)
    assert store().purge_expired(cutoff, batch=2, at_most_every=every) == 0


def test_retention_deletes_exactly_what_was_created_and_finished_before_the_cutoff(app_env):
    """Bug: the cutoff a day late, for creation or for finish: the boundary is the cutoff instant."""
    cutoff = utc_now().replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=400)
    before = make(str(uuid.uuid4()), FAILED, created_at=cutoff - timedelta(minutes=1)).record.request_id
    after = make(str(uuid.uuid4()), FAILED, created_at=cutoff + timedelta(minutes=1)).record.request_id
    next_day = make(str(uuid.uuid4()), FAILED, created_at=cutoff + timedelta(hours=13)).record.request_id
    finished_after = make(
        str(uuid.uuid4()), FAILED, created_at=cutoff - timedelta(days=2), finished_at=cutoff + timedelta(minutes=1)
    ).record.request_id
    assert store().purge_expired(cutoff, batch=500) == 1
    assert store().get(before) is None
    assert store().get(after) is not None and store().get(next_day) is not None
    assert store().get(finished_after) is not None


def test_a_reopened_request_is_not_listed_under_its_old_state_while_its_entry_remains(api: Api, customer_id):
    """Bug: a list entry whose record is now in another state is listed anyway."""
    from .test_store_races import crash_reopen

    request_id = crash_reopen(customer_id)
    failed = store().list_page(ListFilter(states=(FAILED,), customer_id=None), 100, None).records
    assert request_id not in [r.request_id for r in failed]
    pending = store().list_page(ListFilter(states=(PENDING,)), 100, None).records
    assert [r.request_id for r in pending].count(request_id) == 1


def test_a_continuation_token_is_refused_under_other_filters_even_when_it_fits_their_range(api: Api):
    """Bug: only the token's position is checked, not the filters it was made under."""
    day = (utc_now() - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    for hour in range(3):
        make(str(uuid.uuid4()), FAILED, created_at=day + timedelta(hours=hour, minutes=30))
    first = store().list_page(ListFilter(states=(FAILED,), created_from=day), 1, None)
    assert first.continuation_token is not None
    other = ListFilter(states=(FAILED,), created_from=day + timedelta(minutes=1))  # same partitions
    with pytest.raises(InvalidRequest, match="continuationToken"):
        store().list_page(other, 1, first.continuation_token)
    reply = list_call(api, state="failed", createdFrom=f"{day:%Y-%m-%d}T00:00:00Z", top="1")
    token = re.search(r"continuationToken=([^&]+)", reply.json()["nextLink"]).group(1)
    refused = list_call(api, state="failed", createdFrom=f"{day:%Y-%m-%d}T00:01:00Z", top="1", continuationToken=token)
    assert refused.status == 400
