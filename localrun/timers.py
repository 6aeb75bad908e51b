"""Firing the app's timer triggers on their NCRONTAB schedules (seconds field first)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from azure.functions.timer import TimerRequest
from croniter import croniter

log = logging.getLogger("localrun.timers")


def next_fire(schedule: str, after: datetime) -> datetime:
    return croniter(schedule, after, second_at_beginning=True).get_next(datetime)


class TimerScheduler:
    """One daemon thread per timer function; `fire(name)` runs one now (the admin endpoint)."""

    def __init__(self, functions: dict[str, Any]) -> None:
        self._timers = {
            name: function
            for name, function in functions.items()
            if function.get_trigger().get_dict_repr()["type"] == "timerTrigger"
        }
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._locks = {name: threading.Lock() for name in self._timers}

    @property
    def names(self) -> list[str]:
        return sorted(self._timers)

    def schedule_of(self, name: str) -> str:
        return self._timers[name].get_trigger().get_dict_repr()["schedule"]

    def start(self) -> None:
        for name in self._timers:
            thread = threading.Thread(target=self._loop, args=(name,), name=f"timer-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def fire(self, name: str, past_due: bool = False) -> None:
        """Run the timer function once, never overlapping itself (as the host's singleton lock)."""
        with self._locks[name]:
            log.info("timer.fire function=%s", name)
            self._timers[name].get_user_function()(TimerRequest(past_due=past_due))

    def _loop(self, name: str) -> None:
        schedule = self.schedule_of(name)
        while not self._stop.is_set():
            due = next_fire(schedule, datetime.now(UTC))
            if self._stop.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
                return
            try:
                self.fire(name)
            except Exception:
                log.exception("timer.failed function=%s", name)
