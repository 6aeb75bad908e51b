"""Firing the app's timer triggers on their NCRONTAB schedules (seconds field first)."""

from __future__ import annotations

import inspect
import logging
import os
import re
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from azure.functions.timer import TimerRequest
from croniter import croniter

from shared.errors import ConfigurationError
from shared.settings import ALL_SETTINGS, PENDING_SCHEDULE, pending_schedule

log = logging.getLogger("localrun.timers")

_BINDING_EXPRESSION = re.compile(r"^%([A-Za-z0-9_.:-]+)%$")


def resolve_schedule(schedule: str, environ: Mapping[str, str] | None = None) -> str:
    """A timer's schedule as the Functions host resolves it: `%NAME%` is the app setting NAME.

    The host requires the setting to exist; locally, an unset setting falls back to its documented
    default (`shared.settings`). `PENDING_SCHEDULE` is validated (`ConfigurationError` naming it).
    """
    environ = os.environ if environ is None else environ
    match = _BINDING_EXPRESSION.match(schedule.strip())
    if not match:
        return schedule
    name = match.group(1)
    if name == PENDING_SCHEDULE.name:
        return pending_schedule(environ)
    value = (environ.get(name) or "").strip()
    default = next((setting.default for setting in ALL_SETTINGS if setting.name == name), None)
    if not value and default is None:
        raise ConfigurationError(f"Timer schedule {schedule} names app setting {name}, which is not set")
    return value or str(default)


class LocalContext:
    """The parts of `func.Context` the app uses: an invocation id and thread-local storage."""

    def __init__(self, function_name: str) -> None:
        self.invocation_id = str(uuid.uuid4())
        self.function_name = function_name
        self.thread_local_storage = threading.local()


def call_function(user_function: Any, trigger: Any, name: str) -> Any:
    """Call as the worker does: the trigger, plus a `context` if the function asks for one."""
    if "context" in inspect.signature(user_function).parameters:
        return user_function(trigger, context=LocalContext(name))
    return user_function(trigger)


def next_fire(schedule: str, after: datetime) -> datetime:
    following: datetime = croniter(schedule, after, second_at_beginning=True).get_next(datetime)
    return following


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
        """The schedule as the host would run it (`%NAME%` resolved from the environment)."""
        return resolve_schedule(str(self._timers[name].get_trigger().get_dict_repr()["schedule"]))

    def describe(self, name: str) -> str:
        """The resolved schedule, or why the timer will not run."""
        try:
            return self.schedule_of(name)
        except ConfigurationError as error:
            return f"not scheduled: {error.detail}"

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
            call_function(self._timers[name].get_user_function(), TimerRequest(past_due=past_due), name)

    def _loop(self, name: str) -> None:
        try:
            schedule = self.schedule_of(name)
        except ConfigurationError as error:  # as the host: this timer does not run, the rest does
            log.error("timer.not_scheduled function=%s detail=%s", name, error.detail)
            return
        while not self._stop.is_set():
            due = next_fire(schedule, datetime.now(UTC))
            if self._stop.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
                return
            try:
                self.fire(name)
            except Exception:
                log.exception("timer.failed function=%s", name)
