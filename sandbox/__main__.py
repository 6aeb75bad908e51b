"""``python -m sandbox``: run the sandbox standalone for the local runner and benchmarks.

Prints the app settings as ``export K=V`` lines (``eval "$(python -m sandbox)"`` style) and
serves until interrupted. Other processes steer it through ``{base_url}/_sandbox/``.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading

from .server import Sandbox


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--tenant-id")
    parser.add_argument("--app-id")
    parser.add_argument("--app-secret")
    parser.add_argument("--refresh-token")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to Partner Center calls")
    parser.add_argument("--location-style", choices=("relative", "absolute"), default="relative")
    parser.add_argument("--no-seed", action="store_true", help="do not put the partner credentials in the vault")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
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
