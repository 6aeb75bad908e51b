"""`python -m localrun`: the function app on http://localhost:7071, Core Tools not needed.

With a `local.settings.json` (or the settings in the environment) it runs against what they
name, real Azure included. With neither, it starts the embedded defaults: Azurite and the
project's sandbox of Entra ID, Key Vault and Partner Center, on free loopback ports.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from shared.local_settings import apply, load_local_settings

from .embedded import BOTH_ROLES, READ_ROLE, EmbeddedServices, needs_embedded_defaults

if TYPE_CHECKING:
    from .http_host import FunctionHost

REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrun", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("LOCALRUN_PORT", "7071")))
    parser.add_argument("--settings", type=Path, default=REPO_ROOT / "local.settings.json")
    parser.add_argument("--no-timers", action="store_true", help="do not fire timer triggers on schedule")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=REPO_ROOT / ".localrun" / "env",
        help="where to write the settings in use, for the operator CLI (embedded mode)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("azure", "msal", "urllib3", "sandbox"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    apply(load_local_settings(args.settings))
    embedded = EmbeddedServices() if needs_embedded_defaults(os.environ) else None
    if embedded is not None:
        os.environ.update(embedded.start(os.environ))
        embedded.write_env_file(args.env_file, dict(os.environ))

    import function_app  # imported after settings are in place, as the host does

    from .http_host import FunctionHost

    function_key = os.environ.get("LOCALRUN_FUNCTION_KEY") or secrets.token_urlsafe(24)
    master_key = os.environ.get("LOCALRUN_MASTER_KEY") or secrets.token_urlsafe(24)
    host = FunctionHost(function_app.app.get_functions(), function_key=function_key, master_key=master_key)
    port = host.serve(args.host, args.port)
    if not args.no_timers:
        host.timers.start()
    base = f"http://localhost:{port}"
    print(banner(host, base, function_key, master_key, embedded, args.env_file), flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    host.shutdown()
    if embedded is not None:
        embedded.stop()
    return 0


def banner(
    host: FunctionHost,
    base: str,
    function_key: str,
    master_key: str,
    embedded: EmbeddedServices | None,
    env_file: Path,
) -> str:
    keyed = any(route.auth_level != "anonymous" for route in host.routes.http)
    caller_auth = os.environ.get("CALLER_AUTH", "")
    lines = [
        "",
        f"Functions (key: {function_key}):" if keyed else f"Functions (no function key; CALLER_AUTH={caller_auth!r}):",
    ]
    for route in host.routes.http:
        level = "" if route.auth_level == "anonymous" else f"  (auth level {route.auth_level})"
        lines.append(
            f"  {','.join(sorted(route.methods)):<5} {base}/api/{route.template}  [{route.function_name}]{level}"
        )
    for name in host.timers.names:
        lines.append(f"  timer {name} [{host.timers.schedule_of(name)}]: run now with")
        lines.append(f"        curl -X POST -H 'x-functions-key: {master_key}' {base}/admin/functions/{name}")
    mode = (
        "embedded defaults (Azurite + local Partner Center sandbox)"
        if embedded
        else "settings from local.settings.json / environment"
    )
    lines += ["", f"Running on {mode}.", "Try:"]
    customer = str(uuid.uuid4())
    body = f'{{"customerId": "{customer}", "productFamily": "Azure"}}'
    if keyed:
        credential = f"x-functions-key: {function_key}"
    elif embedded is not None and caller_auth == "entra":
        credential = f"Authorization: Bearer {embedded.caller_token(BOTH_ROLES)}"
    else:
        credential = "Authorization: Bearer <a Microsoft Entra ID token for CALLER_AUDIENCES>"
    lines.append(
        f"  curl -s -X POST '{base}/api/product-upgrades' -H '{credential}' "
        f"-H 'Content-Type: application/json' -d '{body}'"
    )
    if not keyed and embedded is not None and caller_auth == "entra":
        lines.append(f"(that token holds {' and '.join(BOTH_ROLES)}; a sandbox token with only {READ_ROLE}:")
        lines.append(f"  {embedded.token_command((READ_ROLE,))}")
        lines.append(")")
    if embedded:
        lines.append(
            f"Operator CLI on the same services: set -a; . {env_file}; set +a; .venv/bin/python -m shared.cli --help"
        )
    lines.append("Ctrl-C stops.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
