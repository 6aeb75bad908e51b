"""Holding one thread at a chosen storage call: a race pinned to one order of two operations.

`HeldTable` wraps the SDK's TableClient (the network edge; the store's own code runs unchanged) and
pauses a named thread just before its n-th call of some methods, until the test releases it. The
interleaving explorer (tests/interleavings.py) tries every order; these holds reproduce the one
order an issue reported, as a regression test that reads like the report.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

WRITES = ("create_entity", "update_entity", "upsert_entity", "delete_entity", "submit_transaction")
READS = ("get_entity", "query_entities", "list_entities")


@dataclass
class Hold:
    """Where a thread stops: before its `nth` call of one of `methods` (counted per hold)."""

    thread: str
    methods: tuple[str, ...]
    nth: int
    seen: int = 0
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def go(self) -> None:
        self.release.set()


class HeldTable:
    def __init__(self, table: Any) -> None:
        self._table = table
        self._holds: list[Hold] = []
        self._lock = threading.Lock()

    def hold(self, thread: str, methods: Iterable[str], nth: int = 1) -> Hold:
        hold = Hold(thread, tuple(methods), nth)
        with self._lock:
            self._holds.append(hold)
        return hold

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._table, name)
        if name not in (*WRITES, *READS):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            me = threading.current_thread().name
            due: list[Hold] = []
            with self._lock:
                for hold in self._holds:
                    if hold.thread == me and name in hold.methods and not hold.reached.is_set():
                        hold.seen += 1
                        if hold.seen == hold.nth:
                            due.append(hold)
            for hold in due:
                hold.reached.set()
                assert hold.release.wait(30), f"{me} was never released"
            return target(*args, **kwargs)

        return call


class Worker(threading.Thread):
    """Runs `action` in a thread of the given name and keeps its result or exception."""

    def __init__(self, name: str, action: Callable[[], Any]) -> None:
        super().__init__(name=name, daemon=True)
        self._action = action
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._action()
        except BaseException as error:
            self.error = error

    def wait_at(self, hold: Hold, timeout: float = 20) -> bool:
        """True when the thread stopped at `hold`; False when it finished without reaching it."""
        while not hold.reached.wait(0.02):
            if not self.is_alive():
                return False
            timeout -= 0.02
            assert timeout > 0, f"{self.name} neither reached its hold nor finished"
        return True

    def finish(self) -> Any:
        self.join(30)
        assert not self.is_alive(), f"{self.name} did not finish"
        return self.result
