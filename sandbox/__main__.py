"""``python -m sandbox``: run the sandbox standalone for the local runner and benchmarks.

Prints the app settings as ``export K=V`` lines (``eval "$(python -m sandbox)"`` style) and
serves until interrupted. Other processes steer it through ``{base_url}/_sandbox/``.

``python -m sandbox customer ID --ineligible [--reason TEXT]`` (or ``--eligible``) changes how a
*running* sandbox answers for one customer: the one of ``make run`` (found through
``.localrun/env``: ``SANDBOX_URL`` and its CA bundle), or ``--url``.
``python -m sandbox customers --seed N [--random-seed S]`` puts N more customers on that sandbox's
partner customer list (``GET /v1/customers``): a mix with some ineligible (Partner Center's
reasons) and some already upgraded. ``python -m sandbox throttle R [--window S]`` makes its
Partner Center answer 429 above R calls per minute (``throttle off`` to stop).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .server import Sandbox


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command")
    customer = commands.add_parser("customer", help="how a running sandbox answers for one customer")
    customer.add_argument("customer_id")
    verdict = customer.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--ineligible", action="store_true", help="eligibility says no; an upgrade is refused (422)")
    verdict.add_argument("--eligible", action="store_true", help="back to the default: eligible")
    customer.add_argument("--reason", default="The customer has no active Azure subscription (sandbox).")
    customer.add_argument(
        "--url", help="the sandbox's base URL (default: SANDBOX_URL from the environment or env file)"
    )
    customer.add_argument("--env-file", type=Path, default=Path(".localrun") / "env", help="the runner's env file")
    seed = commands.add_parser("customers", help="seed a running sandbox's partner customer list")
    seed.add_argument("--seed", type=int, required=True, metavar="N", help="how many customers to add")
    seed.add_argument("--random-seed", type=int, help="the same number gives the same customers")
    throttle = commands.add_parser("throttle", help="Partner Center's rate limit on a running sandbox")
    throttle.add_argument("per_minute", help="calls per minute above which it answers 429, or 'off'")
    throttle.add_argument("--window", type=float, default=60.0, help="seconds the calls are counted over (60)")
    for command in (seed, throttle):
        command.add_argument("--url", help="the sandbox's base URL (default: SANDBOX_URL from the environment)")
        command.add_argument("--env-file", type=Path, default=Path(".localrun") / "env", help="the runner's env file")
    parser.add_argument("--tenant-id")
    parser.add_argument("--app-id")
    parser.add_argument("--app-secret")
    parser.add_argument("--refresh-token")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to Partner Center calls")
    parser.add_argument("--location-style", choices=("relative", "absolute"), default="relative")
    parser.add_argument("--no-seed", action="store_true", help="do not put the partner credentials in the vault")
    return parser.parse_args(argv)


def _env_file_values(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = shlex.split(line.removeprefix("export "))
        if words and "=" in words[0]:
            name, value = words[0].split("=", 1)
            values[name] = value
    return values


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _control(args: argparse.Namespace, method: str, path: str, body: dict[str, Any]) -> dict[str, Any] | int:
    """Call ``/_sandbox/{path}`` on the running sandbox; its JSON answer, or the exit code."""
    import requests

    saved = _env_file_values(args.env_file)
    from_file = not (args.url or os.environ.get("SANDBOX_URL")) and bool(saved.get("SANDBOX_URL"))
    url = args.url or os.environ.get("SANDBOX_URL") or saved.get("SANDBOX_URL")
    if not url:
        print(
            f"no sandbox to talk to: start `make run` (it writes SANDBOX_URL to {args.env_file}) or pass --url",
            file=sys.stderr,
        )
        return 2
    pid = (saved if from_file else os.environ).get("LOCALRUN_PID", "")
    if not args.url and pid.isdigit() and not _alive(int(pid)):
        print(
            f"no runner: the local runner (pid {pid}) this sandbox URL came from has stopped: start `make run` "
            "(then `source .localrun/env` anew)",
            file=sys.stderr,
        )
        return 2
    ca_bundle = saved.get("REQUESTS_CA_BUNDLE") if from_file else os.environ.get("REQUESTS_CA_BUNDLE")
    try:
        reply = requests.request(
            method,
            f"{url.rstrip('/')}/_sandbox/{path}",
            json=body,
            verify=ca_bundle if ca_bundle and Path(ca_bundle).exists() else True,
            timeout=60,
        )
    except requests.RequestException as error:
        print(
            f"the sandbox at {url} does not answer ({type(error).__name__}): is `make run` still running?",
            file=sys.stderr,
        )
        return 1
    except OSError as error:  # not a RequestException: the CA file of a stopped runner (REQUESTS_CA_BUNDLE)
        print(f"no runner: the sandbox's CA file is gone ({error}): start `make run`", file=sys.stderr)
        return 2
    if reply.status_code != 200:
        print(f"the sandbox refused: {reply.status_code} {reply.text}", file=sys.stderr)
        return 1
    answer: dict[str, Any] = reply.json()
    return answer


def set_customer(args: argparse.Namespace) -> int:
    """PUT /_sandbox/customers/{id} on the running sandbox."""
    body = {"eligible": True} if args.eligible else {"eligible": False, "reason": args.reason}
    answer = _control(args, "PUT", f"customers/{args.customer_id}", body)
    if isinstance(answer, int):
        return answer
    verdict = "eligible" if args.eligible else f"not eligible ({args.reason})"
    print(f"customer {args.customer_id}: {verdict}")
    return 0


def seed_customers(args: argparse.Namespace) -> int:
    """POST /_sandbox/customers/seed on the running sandbox; prints the mix it seeded."""
    if args.seed < 1:
        print("--seed must be at least 1", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"count": args.seed}
    if args.random_seed is not None:
        body["randomSeed"] = args.random_seed
    answer = _control(args, "POST", "customers/seed", body)
    if isinstance(answer, int):
        return answer
    reasons = ", ".join(f"{code}: {count}" for code, count in answer["reasons"].items()) or "none"
    print(
        f"seeded {answer['seeded']} customers: {answer['eligible']} eligible, {answer['ineligible']} ineligible "
        f"(by error code {reasons}), {answer['alreadyUpgraded']} already upgraded, "
        f"{answer['upgradeInProgress']} with an upgrade in progress"
    )
    return 0


def set_throttle(args: argparse.Namespace) -> int:
    """PUT /_sandbox/throttle on the running sandbox."""
    off = args.per_minute.lower() in ("off", "0", "none")
    try:
        per_minute = None if off else float(args.per_minute)
    except ValueError:
        print("the rate is a number of calls per minute, or 'off'", file=sys.stderr)
        return 2
    answer = _control(args, "PUT", "throttle", {"perMinute": per_minute, "windowSeconds": args.window})
    if isinstance(answer, int):
        return answer
    if answer.get("perMinute") is None:
        print("Partner Center throttle: off")
    else:
        print(
            f"Partner Center throttle: {answer['perMinute']:g} calls per minute "
            f"({answer['limit']} per {answer['windowSeconds']:g} s), then 429 + Retry-After"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.command == "customer":
        return set_customer(args)
    if args.command == "customers":
        return seed_customers(args)
    if args.command == "throttle":
        return set_throttle(args)
    sandbox = Sandbox(
        tenant_id=args.tenant_id, app_id=args.app_id, app_secret=args.app_secret, refresh_token=args.refresh_token
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with sandbox:
        sandbox.latency = args.latency
        sandbox.location_style = args.location_style
        if not args.no_seed:
            sandbox.seed_partner_credentials()
        for key, value in sandbox.env().items():
            print(f"export {key}={shlex.quote(value)}")
        print(f"# control surface: {sandbox.base_url}/_sandbox/calls  (Ctrl-C to stop)", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    print("# sandbox stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
