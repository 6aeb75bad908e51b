"""A deterministic scheduler for the real code: run operations in threads and pause each at
every storage call and every Partner Center call, so a test decides the order of their calls.

Pause points are at the network edge, never inside our code:

- every `azure.data.tables.TableClient` call the store makes (create/update/upsert/delete/get
  entity, query, submit_transaction), patched on the SDK class;
- every `requests.Session.request` to the Partner Center endpoint (the sandbox's URL).

Only threads that run on behalf of an operation pause: the operation is a `ContextVar`, so the
pool threads the app starts with `contextvars.copy_context().run` (the timer's workers, a list's
point reads) belong to the operation that started them. One operation runs at a time: the
scheduler grants one step (the paused call, then everything up to the next pause point or the
end), waits for the operation to settle, then chooses again. An operation must therefore be
sequential between pause points (a timer run at concurrency 1 is).

A *crash* is a `Crash` (a `BaseException`, which no `except Exception` in the app swallows)
raised out of the paused call instead of making it: the operation's thread stops there for ever;
every later call of that operation (another of its pool threads) crashes too.

A schedule is a list of `Segment`s: run an operation until it is paused before its n-th call,
crash it there, or run it to its end. `preempt_once`, `crash_once`, `preempt_twice` and
`all_interleavings` generate the families the explorer runs (see docs/exactly-once.md).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from math import comb
from typing import Any

TABLE_METHODS = (
    "create_entity",
    "update_entity",
    "upsert_entity",
    "delete_entity",
    "get_entity",
    "query_entities",
    "submit_transaction",
)
SETTLE_SECONDS = 30.0


class Crash(BaseException):
    """Injected: the operation's process died at this call (the harness swallows it)."""


class ScheduleError(AssertionError):
    """The scheduler could not run a schedule (an operation hung between pause points)."""


@dataclass(frozen=True)
class Segment:
    """Run `actor` until it is paused before its call number `until` (1-based; None: to its end),
    and then, with `crash`, crash it at that call."""

    actor: str
    until: int | None = None
    crash: bool = False

    def __str__(self) -> str:
        if self.until is None:
            return f"{self.actor}*"
        return f"{self.actor}{'!' if self.crash else '@'}{self.until}"


@dataclass(frozen=True)
class Schedule:
    segments: tuple[Segment, ...]

    def __str__(self) -> str:
        return " ".join(str(segment) for segment in self.segments)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """The inverse of `str`: "repair@2 delete-callback@4 repair* delete-callback*"."""
        segments = []
        for word in text.split():
            if word.endswith("*"):
                segments.append(Segment(word[:-1]))
                continue
            mark = "!" if "!" in word else "@"
            actor, until = word.rsplit(mark, 1)
            segments.append(Segment(actor, int(until), crash=mark == "!"))
        return cls(tuple(segments))

    @property
    def crashes(self) -> bool:
        return any(segment.crash for segment in self.segments)


@dataclass
class _Actor:
    name: str
    fn: Callable[[], Any]
    thread: threading.Thread | None = None
    state: str = "new"  # new | running | paused | done | crashed | failed
    calls: int = 0  # pause points reached (the call it is paused before is number `calls`)
    label: str = ""
    made: str = ""  # the label of the last call it made
    grant: str | None = None  # "go" | "crash"
    crashed: bool = False
    result: Any = None
    error: BaseException | None = None
    waiting: int = 0  # threads of this actor paused right now


@dataclass
class Run:
    """What a schedule did: each call made (actor, number, label) in order, and the actors' ends."""

    schedule: Schedule
    trace: list[tuple[str, int, str]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    crashed: set[str] = field(default_factory=set)
    finished_order: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"schedule: {self.schedule}"]
        lines += [f"  {actor}#{number} {label}" for actor, number, label in self.trace]
        for actor, error in self.errors.items():
            lines.append(f"  {actor} raised {type(error).__name__}: {error}")
        return "\n".join(lines)


_current: contextvars.ContextVar[tuple[Scheduler, _Actor] | None] = contextvars.ContextVar(
    "interleavings_actor", default=None
)


def _entity_label(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A short description of a table call: its partition prefix, row kind, and a written State."""

    def where(pk: str, row: str) -> str:
        kind = "lock" if row.startswith("lock|") else ("row" if len(row) > 20 else row[:12])
        return f"{pk[:2] if pk[:2] in ('a-', 'f-', 'l-') else pk}/{kind}"

    first = args[0] if args else kwargs.get("entity") or kwargs.get("operations") or kwargs.get("query_filter")
    if method == "submit_transaction":
        ops = [f"{op[0]}:{where(op[1]['PartitionKey'], op[1]['RowKey'])}" for op in first or []]
        return f"{method}[{', '.join(ops)}]"
    if method == "query_entities":
        text = str(first)
        return f"{method}({'repair' if 'ReopenedFrom' in text else text[:40]})"
    if isinstance(first, dict):
        state = f" State={first['State']}" if "State" in first else ""
        return f"{method} {where(first['PartitionKey'], first['RowKey'])}{state}"
    if method in ("get_entity", "delete_entity") and len(args) >= 2:
        return f"{method} {where(str(args[0]), str(args[1]))}"
    return method


class Scheduler:
    """Installs the pause points (`installed()`), then runs schedules of named operations."""

    def __init__(self, partner_center_url: str) -> None:
        self._pc = partner_center_url.rstrip("/")
        self._cv = threading.Condition()
        self._actors: dict[str, _Actor] = {}
        self._run: Run | None = None
        self._crash_after: str | None = None

    # --- pause points ---

    @contextlib.contextmanager
    def installed(self) -> Iterator[Scheduler]:
        import requests
        from azure.data.tables import TableClient

        originals: dict[str, Any] = {name: getattr(TableClient, name) for name in TABLE_METHODS}
        original_request = requests.Session.request
        scheduler = self

        def table_wrapper(name: str, original: Any) -> Any:
            def call(client: Any, *args: Any, **kwargs: Any) -> Any:
                scheduler._pause(lambda: _entity_label(name, args, kwargs))
                return original(client, *args, **kwargs)

            call.__name__ = name
            return call

        def request(session: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if str(url).startswith(scheduler._pc):
                path = str(url)[len(scheduler._pc) :].split("?")[0]
                scheduler._pause(lambda: f"partner-center {method} {path[:48]}")
            return original_request(session, method, url, *args, **kwargs)

        for name, original in originals.items():
            setattr(TableClient, name, table_wrapper(name, original))
        requests.Session.request = request  # type: ignore[method-assign]
        try:
            yield self
        finally:
            for name, original in originals.items():
                setattr(TableClient, name, original)
            requests.Session.request = original_request  # type: ignore[method-assign]

    def _pause(self, label: Callable[[], str]) -> None:
        current = _current.get()
        if current is None or current[0] is not self:
            return
        actor = current[1]
        text = label()
        with self._cv:
            if actor.crashed:
                raise Crash(f"{actor.name} after its crash: {text}")
            actor.calls += 1
            number = actor.calls
            actor.label = text
            actor.waiting += 1
            actor.state = "paused"
            self._cv.notify_all()
            while actor.grant is None:
                self._cv.wait()
            decision, actor.grant = actor.grant, None
            actor.waiting -= 1
            actor.state = "running"
            if decision == "crash":
                actor.crashed = True
                raise Crash(f"{actor.name} crashed at call {number}: {text}")
            actor.made = text
            assert self._run is not None
            self._run.trace.append((actor.name, number, text))

    # --- running a schedule ---

    def run(
        self, operations: dict[str, Callable[[], Any]], schedule: Schedule, *, crash_after: str | None = None
    ) -> Run:
        """Run the operations under the schedule; every operation not named by it (or left
        unfinished by it) runs to its end afterwards, in the order given. With `crash_after`, a
        crashing segment crashes at the first call after one whose label contains that text."""
        self._crash_after = crash_after
        run = Run(schedule)
        self._run = run
        self._actors = {name: _Actor(name, fn) for name, fn in operations.items()}
        try:
            for segment in schedule.segments:
                self._segment(segment)
            for name in operations:
                self._segment(Segment(name))
        finally:
            for actor in self._actors.values():
                if actor.thread is not None:
                    actor.thread.join(SETTLE_SECONDS)
            self._run = None
        for actor in self._actors.values():
            run.calls[actor.name] = actor.calls
            if actor.state == "done":
                run.results[actor.name] = actor.result
            elif actor.state == "crashed":
                run.crashed.add(actor.name)
            elif actor.state == "failed" and actor.error is not None:
                run.errors[actor.name] = actor.error
        return run

    def _segment(self, segment: Segment) -> None:
        actor = self._actors[segment.actor]
        while actor.state not in ("done", "crashed", "failed"):
            if segment.crash and self._crash_after is not None and actor.state == "paused":
                if self._crash_after in actor.made:
                    self._step(actor, "crash")
                    return
            elif segment.until is not None and actor.state == "paused" and actor.calls >= segment.until:
                if segment.crash:
                    self._step(actor, "crash")
                return
            self._step(actor, "go")

    def _step(self, actor: _Actor, decision: str) -> None:
        with self._cv:
            if actor.state == "new":
                actor.state = "running"
                actor.thread = threading.Thread(target=self._body, args=(actor,), name=f"op-{actor.name}", daemon=True)
                before = 0
                actor.thread.start()
            else:
                before = actor.calls
                actor.grant = decision
                self._cv.notify_all()
            settled = self._cv.wait_for(
                lambda: (
                    actor.state in ("done", "crashed", "failed")
                    or (actor.state == "paused" and actor.calls > before and actor.waiting > 0)
                ),
                timeout=SETTLE_SECONDS,
            )
        if not settled:
            raise ScheduleError(
                f"operation {actor.name} neither reached a pause point nor ended within {SETTLE_SECONDS:.0f} s "
                f"after call {actor.calls} ({actor.label}):\n{_thread_dump()}"
            )

    def _body(self, actor: _Actor) -> None:
        _current.set((self, actor))
        outcome, result, error = "done", None, None
        try:
            result = actor.fn()
        except Crash:
            outcome = "crashed"
        except BaseException as caught:  # reported as the operation's failure
            outcome, error = "failed", caught
        with self._cv:
            actor.result, actor.error = result, error
            actor.state = "crashed" if actor.crashed else outcome
            if actor.state == "crashed" and error is not None:
                actor.error = None
            assert self._run is not None
            self._run.finished_order.append(actor.name)
            self._cv.notify_all()


def _thread_dump() -> str:
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    lines = []
    for ident, frame in sys._current_frames().items():
        frames = [f for f in traceback.extract_stack(frame) if "shared/" in f.filename or "tests/" in f.filename]
        if frames:
            lines.append(f"thread {names.get(ident, ident)}:")
            lines += [f"    {f.filename.rsplit('/', 2)[-2:]}:{f.lineno} {f.name}" for f in frames[-6:]]
    return "\n".join(lines)


# --- schedule families ---


def preempt_once(a: str, b: str, calls_a: int) -> list[Schedule]:
    """A runs until paused before its call i (1..calls_a), B runs to its end, A finishes; and A
    to its end before B. i = 1 is "B first" (A only did what precedes its first call)."""
    found = [Schedule((Segment(a, i), Segment(b), Segment(a))) for i in range(1, calls_a + 1)]
    return [*found, Schedule((Segment(a), Segment(b)))]


def preempt_pair(a: str, b: str, calls_a: int, calls_b: int) -> list[Schedule]:
    """Two switches: A paused before its call i, B paused before its call j, A finishes, B
    finishes (A read, B wrote half, A acted on what it read, B goes on)."""
    return [
        Schedule((Segment(a, i), Segment(b, j), Segment(a), Segment(b)))
        for i in range(2, calls_a + 1)
        for j in range(2, calls_b + 1)
    ]


def crash_once(a: str, b: str, calls_a: int) -> list[Schedule]:
    """A runs until paused before its call i and crashes there (the call is never made); B runs."""
    return [Schedule((Segment(a, i, crash=True), Segment(b))) for i in range(1, calls_a + 1)]


def preempt_twice(a: str, b: str, c: str, i: int, calls_a: int) -> list[Schedule]:
    """A paused before call i, B runs to its end, A goes on to just before call j > i, C runs to
    its end, A finishes: the stale-actor shape (A read, B changed it, C acted in A's gap).
    `calls_a`: how many calls A makes when B runs in its gap at i (measure it: a stale actor
    often makes more calls than it does alone)."""
    return [
        Schedule((Segment(a, i), Segment(b), Segment(a, j), Segment(c), Segment(a))) for j in range(i + 1, calls_a + 1)
    ]


def all_interleavings(a: str, b: str, calls_a: int, calls_b: int, limit: int) -> list[Schedule] | None:
    """Every order of A's and B's calls (as measured alone), or None if there are more than
    `limit` (C(p+q, p)). Each is a schedule of one-call segments; if an operation makes fewer
    or more calls in an interleaving than alone, the rest runs as the scheduler's default."""
    if comb(calls_a + calls_b, calls_a) > limit:
        return None
    schedules = []
    for positions in itertools.combinations(range(calls_a + calls_b), calls_a):
        made = {a: 0, b: 0}
        segments: list[Segment] = []
        for slot in range(calls_a + calls_b):
            who = a if slot in positions else b
            made[who] += 1
            # "paused before call made+1" = its call number `made` has been made
            segments.append(Segment(who, made[who] + 1))
        schedules.append(Schedule(tuple(_merge(segments))))
    return schedules


def _merge(segments: Sequence[Segment]) -> list[Segment]:
    """Adjacent segments of one actor: only the last one matters."""
    merged: list[Segment] = []
    for segment in segments:
        if merged and merged[-1].actor == segment.actor:
            merged[-1] = segment
        else:
            merged.append(segment)
    return merged
