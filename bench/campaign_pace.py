"""Scenario 6 (campaign part, issue 19): a campaign's pace against the sandbox and Azurite.

`python -m bench.campaign_pace [--paced-seconds 180] [--throttled-members 1000] [--throttle-per-minute 300]`

1. Paced: a campaign at 3,600 calls per hour, its runner given `--paced-seconds`: the pace achieved
   against the pace asked (target within 5 %), 429s (target none), the most calls in any 10 s
   window (a burst would show here: at 3,600/h it is 10 or 11).
2. Throttled: the sandbox answers 429 + Retry-After above R calls per minute; a campaign of M
   members at the fastest pace (36,000/h, far above R) is assessed to the end: the rate achieved
   against R (target at least 90 %), every member assessed, and every call after a 429 sent no
   earlier than its Retry-After.

Calls are recorded at the campaign runner's Partner Center client (time, status, Retry-After).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

from .harness import app_environment, call_function, log_progress


class Recorder:
    """Wraps the runner's client: every eligibility call with its outcome."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[float, int, int | None]] = []  # (monotonic, status, retry_after)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def eligibility(self, *args: Any, **kwargs: Any) -> Any:
        from shared.errors import UpstreamThrottled

        at = time.monotonic()
        try:
            result = self._client.eligibility(*args, **kwargs)
        except UpstreamThrottled as error:
            self.calls.append((at, 429, error.retry_after))
            raise
        self.calls.append((at, 200, None))
        return result


def _campaign(members: int, per_hour: int) -> str:
    response = call_function(
        "create_campaign",
        "POST",
        "campaigns",
        json_body={"name": "bench", "customers": [str(uuid.uuid4()) for _ in range(members)], "perHour": per_hour},
    )
    body = json.loads(response.get_body())
    assert response.status_code == 202, body
    return str(body["campaignId"])


def _runner() -> tuple[Any, Recorder]:
    from shared.api.campaign_wiring import campaign_runner

    runner = campaign_runner()
    recorder = Recorder(runner._pc)
    runner._pc = recorder
    return runner, recorder


def paced(seconds: float) -> dict[str, Any]:
    campaign_id = _campaign(int(seconds) + 60, 3600)
    runner, recorder = _runner()
    started = time.monotonic()
    runner.run(started + seconds)
    from shared.api.campaign_wiring import campaign_store
    from shared.upgrade_requests.campaigns import steering

    steering.act(campaign_store(), campaign_id, "pause")  # its rest would count in the throttled run
    times = [at for at, _, _ in recorder.calls]
    span = seconds
    windows = [sum(1 for t in times if start <= t < start + 10) for start in times]
    achieved = len(times) / span * 3600
    return {
        "campaignId": campaign_id,
        "askedPerHour": 3600,
        "seconds": seconds,
        "calls": len(times),
        "achievedPerHour": round(achieved, 1),
        "deviationPercent": round(100 * (achieved - 3600) / 3600, 2),
        "throttled": sum(1 for _, status, _ in recorder.calls if status == 429),
        "mostCallsIn10s": max(windows, default=0),
    }


def throttled(members: int, per_minute: float, sandbox: Any) -> dict[str, Any]:
    from shared.api.campaign_wiring import campaign_store

    sandbox.set_throttle(per_minute, window_seconds=60)
    campaign_id = _campaign(members, 36000)
    runner, recorder = _runner()
    started = time.monotonic()
    while True:
        runner.run(time.monotonic() + 60)
        stored = campaign_store().get(campaign_id)
        assert stored is not None
        if stored.campaign.count("pending") == 0 or time.monotonic() - started > 3600:
            break
    elapsed = time.monotonic() - started
    sandbox.set_throttle(None)
    calls = recorder.calls
    answered = [c for c in calls if c[1] == 200]
    early = 0
    for index, (at, status, retry_after) in enumerate(calls):
        if status == 429 and retry_after and index + 1 < len(calls) and calls[index + 1][0] < at + retry_after - 0.05:
            early += 1
    counts = {k: v for k, v in stored.campaign.counts.items() if v}
    return {
        "members": members,
        "throttlePerMinute": per_minute,
        "seconds": round(elapsed, 1),
        "answeredCalls": len(answered),
        "throttledCalls": len(calls) - len(answered),
        "achievedPerMinute": round(len(answered) / elapsed * 60, 1),
        "achievedShareOfR": round(len(answered) / elapsed * 60 / per_minute, 3),
        "counts": counts,
        "everyMemberAssessed": counts.get("pending", 0) == 0,
        "callsBeforeRetryAfter": early,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paced-seconds", type=float, default=180.0)
    parser.add_argument("--throttled-members", type=int, default=1000)
    parser.add_argument("--throttle-per-minute", type=float, default=300.0)
    args = parser.parse_args()
    with app_environment() as env:
        result: dict[str, Any] = {}
        if args.paced_seconds > 0:
            log_progress("campaign pace: paced run")
            result["paced"] = paced(args.paced_seconds)
        log_progress("campaign pace: throttled run")
        result["throttled"] = throttled(args.throttled_members, args.throttle_per_minute, env.sandbox)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
