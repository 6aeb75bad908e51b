"""Helpers for the fuzz and chaos tests, and a timer worker that can be killed with SIGKILL.

The worker is this module run as a program: ``python -m tests.chaos_support worker CONFIG.json``.
CONFIG holds the environment (the same settings the app gets from the host) and the run's owner,
concurrency and budget. It builds the app's runtime exactly as a Functions instance would, prints
``READY``, runs ``shared.upgrade_requests.timer_run.process_pending`` once and prints ``DONE {report}``. It logs
everything at DEBUG to stderr, so the parent can scan that output for secrets too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox import Sandbox
    from shared.upgrade_requests.store import RequestStore

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_LOG_FORMAT = "%(created).6f %(levelname)s %(name)s %(message)s"


# --- storage -------------------------------------------------------------------------------


def table_is_empty() -> bool:
    """True if the test's request table holds no request entity: no record, key or customer lock.

    Read with the storage SDK directly (not the app's store), from the settings the app uses.
    """
    from azure.data.tables import TableClient

    connection_string = os.environ["AzureWebJobsStorage"]  # noqa: SIM112 - the host's own spelling
    with TableClient.from_connection_string(
        connection_string, table_name=os.environ["UPGRADE_REQUESTS_TABLE"]
    ) as table:
        # (the `meta` partition holds the table's layout marker, written when the app first uses it)
        return next(iter(table.query_entities("PartitionKey ne 'meta'", results_per_page=1)), None) is None


def make_due(store: RequestStore, request_ids: Iterable[str], workers: int = 8) -> int:
    """Move each active request's next attempt and lease into the past, as time passing would.

    Only call this while no worker is running (between rounds). Returns how many were moved.
    """
    from shared.upgrade_requests.record import utc_now
    from shared.upgrade_requests.store import WriteConflict

    def one(request_id: str) -> int:
        for _ in range(3):
            stored = store.get(request_id)
            if stored is None or stored.record.is_final:
                return 0
            past = utc_now() - timedelta(seconds=1)
            try:
                store.replace(replace(stored.record, next_attempt_at=past, lease_until=past), stored.etag)
                return 1
            except WriteConflict:
                continue
        return 0

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(one, list(request_ids)))


# --- faults --------------------------------------------------------------------------------

PARTNER_CENTER = ("partner_center.*",)
# Every service, Key Vault writes included (the refresh-token write-back used to deadlock an
# instance on a connection fault: BUG F, fixed; test_chaos.py::test_bug_f_... guards it).
EVERYWHERE = ("partner_center.*", "entra.*", "managed_identity.*", "key_vault.*")


@dataclass(frozen=True)
class FaultMix:
    """One random-fault configuration for ``sandbox.faults.set_random``."""

    name: str
    kinds: tuple[str, ...]
    params: dict[str, Any]
    operations: tuple[str, ...] = PARTNER_CENTER


# With PARTNER_CENTER_TIMEOUT_SECONDS=1: "slow" is answered in time, "late" is processed after the
# client gave up (the nastiest race: the upgrade appears after the caller's timeout), and
# "process-then-hang" is the classic ambiguous create.
FAULT_MIXES: tuple[FaultMix, ...] = (
    FaultMix("429-retry-after-0", ("status",), {"status": 429, "retry_after": 0}),
    FaultMix("429-retry-after-1", ("status",), {"status": 429, "retry_after": 1}),
    FaultMix("503-retry-after-1", ("status",), {"status": 503, "retry_after": 1}),
    FaultMix("500", ("status",), {"status": 500}),
    FaultMix("502", ("status",), {"status": 502}),
    FaultMix("504", ("status",), {"status": 504}),
    FaultMix("resets", ("reset", "process_then_reset"), {}),
    FaultMix("slow", ("delay",), {"seconds": 0.3}),
    FaultMix("late", ("delay",), {"seconds": 1.3}),
    FaultMix("process-then-hang", ("process_then_hang",), {"seconds": 1.5}),
    FaultMix(
        "everything-everywhere",
        ("status", "reset", "process_then_reset", "process_then_hang", "delay"),
        {"status": 429, "retry_after": 1, "seconds": 1.2},
        EVERYWHERE,
    ),
)
LONGEST_FAULT_SECONDS = 1.5


class FaultMixer:
    """Switches the sandbox's random fault mode to another mix every ``period`` seconds.

    One background thread; it stops on ``stop()`` or after ``max_seconds``, whichever is first.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        seed: int,
        rate: float,
        period: float = 0.25,
        max_seconds: float = 1800,
        mixes: Sequence[FaultMix] = FAULT_MIXES,
    ) -> None:
        self._sandbox = sandbox
        self._rng = random.Random(seed)
        self._rate = rate
        self._period = period
        self._deadline = time.monotonic() + max_seconds
        self._mixes = tuple(mixes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-mixer", daemon=True)
        self.switches = 0

    def __enter__(self) -> FaultMixer:
        self.switch()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def switch(self) -> FaultMix:
        mix = self._rng.choice(self._mixes)
        self._sandbox.faults.set_random(
            self._rate, mix.kinds, seed=self._rng.randrange(2**32), operations=mix.operations, **mix.params
        )
        self.switches += 1
        return mix

    def _run(self) -> None:
        while not self._stop.wait(self._period) and time.monotonic() < self._deadline:
            self.switch()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sandbox.faults.clear()


def drain(sandbox: Sandbox, quiet_seconds: float = LONGEST_FAULT_SECONDS + 0.5, timeout: float = 15.0) -> None:
    """Wait until the sandbox records no new call for ``quiet_seconds`` (late, delayed and hung
    requests have landed), so the next test on this worker starts from a quiet sandbox."""
    deadline = time.monotonic() + timeout
    seen, quiet_since = len(sandbox.calls()), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = len(sandbox.calls())
        if now != seen:
            seen, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_seconds:
            return


def thread_dump(markers: Sequence[str] = ("shared/", "msal/", "tests/")) -> str:
    """Every thread's stack, the frames of interest only: what a hang looks like."""
    import traceback

    names = {thread.ident: thread.name for thread in threading.enumerate()}
    lines = []
    for ident, frame in sys._current_frames().items():
        frames = [f for f in traceback.extract_stack(frame) if any(m in f.filename for m in markers)]
        if frames:
            lines.append(f"thread {names.get(ident, ident)}:")
            lines += [f"    {f.filename.rsplit('/', 2)[-2:]}:{f.lineno} {f.name}" for f in frames[-8:]]
    return "\n".join(lines)


@contextlib.contextmanager
def thread_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A pool that, when the block fails (e.g. a hang was detected), does not wait for its threads."""
    pool = ThreadPoolExecutor(workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def result_within(future: Future[Any], seconds: float, what: str) -> Any:
    """The future's result, or a test failure with a thread dump if it takes longer than `seconds`."""
    import pytest

    try:
        return future.result(timeout=max(1.0, seconds))
    except FutureTimeout:
        pytest.fail(f"{what} did not finish within {seconds:.0f} s: a hang or deadlock?\n{thread_dump()}")


# --- a timer worker in its own process, killed with SIGKILL ----------------------------------


@dataclass
class WorkerOutcome:
    owner: str
    ready: bool
    killed_mid_run: bool
    report: dict[str, Any] | None
    output: str


class KillableWorker:
    """``process_pending`` in a child process (a Functions instance), to be killed at a random time."""

    def __init__(self, directory: Path, env: dict[str, str], owner: str, concurrency: int, budget_seconds: float):
        self.owner = owner
        self._directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._config = directory / f"{owner}.json"
        self._stdout = directory / f"{owner}.out"
        self._stderr = directory / f"{owner}.err"
        self._config.write_text(
            json.dumps({"env": env, "owner": owner, "concurrency": concurrency, "budget_seconds": budget_seconds})
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> KillableWorker:
        with self._stdout.open("wb") as out, self._stderr.open("wb") as err:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos_support", "worker", str(self._config)],
                cwd=REPO_ROOT,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        return self

    def wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"READY" in self._stdout.read_bytes():
                return True
            if self._process is not None and self._process.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)

    def finish(self, timeout: float = 30.0) -> WorkerOutcome:
        """Wait for the child (killing it if it overstays ``timeout``) and read what it left."""
        assert self._process is not None
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self._process.wait(timeout=10)
        stdout = self._stdout.read_text(errors="replace")
        done = [line for line in stdout.splitlines() if line.startswith("DONE ")]
        report = json.loads(done[0][5:]) if done else None
        return WorkerOutcome(
            owner=self.owner,
            ready="READY" in stdout,
            killed_mid_run=self._process.returncode == -signal.SIGKILL and report is None,
            report=report,
            output=stdout + self._stderr.read_text(errors="replace"),
        )


def worker_main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    os.environ.update(config["env"])
    logging.basicConfig(level=logging.DEBUG, format=WORKER_LOG_FORMAT, stream=sys.stderr)
    import shared.runtime
    from shared.runtime import get_runtime
    from shared.upgrade_requests.timer_run import process_pending

    shared.runtime.NOISY_LOGGERS = ()  # as tests/conftest.py does: library DEBUG lines stay in scope

    runtime = get_runtime()
    with contextlib.suppress(Exception):  # warm up, so a kill lands in the run, not in start-up
        runtime.tokens.access_token()
    print("READY", flush=True)
    report = process_pending(
        runtime.processor,
        owner=config["owner"],
        concurrency=int(config["concurrency"]),
        budget_seconds=float(config["budget_seconds"]),
    )
    print("DONE " + json.dumps(report.as_dict()), flush=True)
    return 0


# --- the secret scan -----------------------------------------------------------------------


def scanned_secrets(sandbox: Sandbox) -> set[str]:
    """What tests/conftest.py's autouse `no_secrets_leak` looks for."""
    return {sandbox.app_secret, *sandbox.issued_refresh_tokens, *sandbox.issued_access_tokens}


def haystacks(records: Iterable[logging.LogRecord], text: str, bodies: Iterable[str]) -> list[str]:
    """What `no_secrets_leak` looks in: each record's message, each line of the log text, each response."""
    return [record.getMessage() for record in records] + text.splitlines() + list(bodies)


def leaked(secrets: Iterable[str], texts: Sequence[str]) -> list[str]:
    """The secrets found in any of the texts (the same test as `no_secrets_leak`: a substring of
    one text; searched in the texts joined by newlines, which no token contains, for speed)."""
    joined = "\n".join(texts)
    return [secret for secret in secrets if secret and "\n" not in secret and secret in joined]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        sys.exit(worker_main(sys.argv[2]))
    sys.exit("usage: python -m tests.chaos_support worker CONFIG.json")
