"""A write on a connection the storage server is closing for idleness (the likely cause of the 503
`test_localrun` got once under load: the run's log was not kept, this is the one way found to get it).

Azurite, like any HTTP server, closes a keep-alive connection after it has been idle a while (node:
5 s, plus its 1 s grace). When the machine is loaded, node's event loop lags: a request that
arrives just before that timer fires sits unread, and when the loop wakes it runs the timer first
and destroys the socket with the request in it. The client sees "connection reset" after sending;
azure-core does not resend a POST/PATCH/MERGE after that (it cannot know the write was not done),
so the store reports "unavailable" and the route answers 503. Here the lag is made on purpose: the
private Azurite is stopped (SIGSTOP) for the seconds around its idle close while the app writes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from sandbox.azurite import Azurite
from shared.runtime import reset_runtime

from .conftest import Api

IDLE_CLOSE_SECONDS = 6.0  # Azurite's keepAliveTimeout (5 s) and node's grace: measured 6.0 s
STALL_SECONDS = 1.0  # node stopped this long either side of the close: a loaded machine's lag


@pytest.fixture
def private_azurite(app_env, monkeypatch) -> Iterator[Azurite]:
    """An Azurite of this test's own, so stopping it touches no other test."""
    azurite = Azurite().start()
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    reset_runtime()
    try:
        yield azurite
    finally:
        reset_runtime()
        azurite.stop()


def _lagging(azurite: Azurite) -> None:
    """Stop node now and let it run again 2 * STALL_SECONDS later (on a timer thread)."""
    pid = azurite.pid
    os.kill(pid, signal.SIGSTOP)
    threading.Timer(2 * STALL_SECONDS, os.kill, (pid, signal.SIGCONT)).start()


def test_a_write_on_a_connection_idle_until_the_servers_close_is_not_a_503(private_azurite, api: Api, sandbox):
    queued = {"Prefer": "respond-async"}
    first = api.upgrade(str(uuid.uuid4()), headers=queued)
    assert first.status == 202, first.body

    time.sleep(IDLE_CLOSE_SECONDS - STALL_SECONDS)
    _lagging(private_azurite)
    time.sleep(STALL_SECONDS)  # the pooled connection is now idle for as long as the server allows
    second = api.upgrade(str(uuid.uuid4()), headers=queued)
    assert second.status == 202, second.body
