"""``python -m sandbox``: run the sandbox standalone for the local runner and benchmarks.

Prints the app settings as ``export K=V`` lines (``eval "$(python -m sandbox)"`` style) and
serves until interrupted. Other processes steer it through ``{base_url}/_sandbox/``.

``python -m sandbox customer ID --ineligible [--reason TEXT]`` (or ``--eligible``) changes how a
*running* sandbox answers for one customer: the one of ``make run`` (found through
``.localrun/env``: ``SANDBOX_URL`` and its CA bundle), or ``--url``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

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


def set_customer(args: argparse.Namespace) -> int:
    """PUT /_sandbox/customers/{id} on the running sandbox."""
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
    body = {"eligible": True} if args.eligible else {"eligible": False, "reason": args.reason}
    try:
        reply = requests.put(
            f"{url.rstrip('/')}/_sandbox/customers/{args.customer_id}",
            json=body,
            verify=ca_bundle if ca_bundle and Path(ca_bundle).exists() else True,
            timeout=10,
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
    verdict = "eligible" if args.eligible else f"not eligible ({args.reason})"
    print(f"customer {args.customer_id}: {verdict}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.command == "customer":
        return set_customer(args)
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
