"""`python -m localrun`: the function app on http://localhost:7071, Core Tools not needed.

With a `local.settings.json` (or the settings in the environment) it runs against what they
name, real Azure included. With neither, it starts the embedded defaults: Azurite and the
project's sandbox of Entra ID, Key Vault and Partner Center, on free loopback ports.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import secrets
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from shared.local_settings import apply, load_local_settings, stale_runner_env

from .embedded import BOTH_ROLES, READ_ROLE, SHARED_ENV, EmbeddedServices, needs_embedded_defaults
from .instance_state import InstanceState, StateInUse
from .listener import listen
from .preflight import EXAMPLE_FILE, expected_services, startup_problems

if TYPE_CHECKING:
    from .http_host import FunctionHost

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 7071
EXIT_CANNOT_START = 2  # settings, port or state problems: nothing was started


def _default_port() -> int:
    value = os.environ.get("PORT") or os.environ.get("LOCALRUN_PORT") or str(DEFAULT_PORT)
    try:
        return int(value)
    except ValueError:
        return -1  # reported as a port problem below


def _fail(lines: list[str]) -> int:
    print("\n".join(lines), file=sys.stderr, flush=True)
    return EXIT_CANNOT_START


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrun", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback)")
    parser.add_argument(
        "--port", type=int, default=_default_port(), help=f"port to serve on (default: $PORT, else {DEFAULT_PORT})"
    )
    parser.add_argument("--settings", type=Path, default=REPO_ROOT / "local.settings.json")
    parser.add_argument("--no-timers", action="store_true", help="do not fire timer triggers on schedule")
    parser.add_argument(
        "--env-file",
        type=Path,
        help="where this instance writes BASE, KEY, MASTER_KEY, AUTH and the settings in use "
        "(one running instance per file; removed at exit). Default: .localrun/env, or "
        ".localrun/env-PORT while another runner owns that one",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("azure", "msal", "urllib3", "sandbox"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not 0 <= args.port <= 65535:
        return _fail([f"localrun: the port must be between 0 and 65535 (--port or PORT), got {args.port}"])

    stale = stale_runner_env()  # before anything: those settings would be taken for real ones
    if stale:
        return _fail([f"localrun: not starting: {stale}"])
    try:
        apply(load_local_settings(args.settings))
    except ValueError as error:
        return _fail([f"localrun: cannot read {args.settings}: {error}"])
    embedded = needs_embedded_defaults(os.environ)
    if not embedded:
        problems = startup_problems(os.environ, REPO_ROOT / EXAMPLE_FILE)
        if problems:
            return _fail(
                [
                    f"localrun: not starting: {len(problems)} problem(s) with the settings "
                    f"(from {args.settings.name} and the environment):"
                ]
                + [f"  - {problem}" for problem in problems]
            )

    try:
        listener = listen(args.host, args.port)  # first: a port in use starts nothing
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            other = free_port_after(args.host, args.port)
            return _fail(
                [
                    f"localrun: port {args.port} is already in use (another `make run`?): stop it, "
                    f"or run this one on a free port: PORT={other} make run (or --port {other}); "
                    f"it writes its own {_shown(state_dir() / f'env-{other}')}"
                ]
            )
        return _fail([f"localrun: cannot listen on {args.host}:{args.port}: {error.strerror}"])
    port = listener.server_address[1]

    try:
        state = acquire_state(args.env_file, port)
    except StateInUse as owner:
        listener.server_close()
        taken = args.env_file or state_dir() / f"env-{port}"
        return _fail(
            [
                f"localrun: another runner ({owner}) is using {taken}: stop it first (Ctrl-C in its "
                f"terminal), or give this one its own state file: --env-file {taken}-{port}"
            ]
        )
    args.env_file = state.env_file
    services = EmbeddedServices() if embedded else None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    host: FunctionHost | None = None
    try:
        if services is not None:
            services.launch()  # Azurite boots while the app is imported

        import function_app  # imported after settings are in place, as the host does

        from .http_host import FunctionHost

        function_key = os.environ.get("LOCALRUN_FUNCTION_KEY") or secrets.token_urlsafe(24)
        master_key = os.environ.get("LOCALRUN_MASTER_KEY") or secrets.token_urlsafe(24)
        host = FunctionHost(
            function_app.app.get_functions(), function_key=function_key, master_key=master_key, listener=listener
        )
        if services is not None:
            os.environ.update(services.start(os.environ))
            problems = startup_problems(os.environ, REPO_ROOT / EXAMPLE_FILE, probe=False)
            if problems:
                return _fail(
                    [f"localrun: not starting: {len(problems)} problem(s) with the settings (embedded defaults):"]
                    + [f"  - {problem}" for problem in problems]
                )
        base = f"http://localhost:{port}"
        auth = caller_header(host, services, function_key)
        exported = {name: os.environ.get(name, "") for name in SHARED_ENV}
        state.write_env(
            {
                "BASE": base,
                "KEY": function_key,
                "MASTER_KEY": master_key,
                "AUTH": auth,
                "LOCALRUN_PID": str(os.getpid()),
                "SANDBOX_URL": services.sandbox.base_url if services is not None else "",
                **exported,
            }
        )
        state.record_owner(f"pid {os.getpid()}, {base}")
        host.serve(args.host, port)
        if not args.no_timers:
            host.timers.start()
        print(banner(host, base, function_key, master_key, services, args.env_file, auth), flush=True)
        stop.wait()
        return 0
    finally:
        if host is not None:
            host.shutdown()
        else:
            listener.server_close()
        if services is not None:
            services.stop()
        state.release()


def state_dir() -> Path:
    """Where runners keep their env files (`LOCALRUN_STATE_DIR`, else the repository's .localrun)."""
    return Path(os.environ.get("LOCALRUN_STATE_DIR") or REPO_ROOT / ".localrun")


def acquire_state(env_file: Path | None, port: int) -> InstanceState:
    """The state this runner owns: the `--env-file` given, else `.localrun/env`, else (another
    runner owns that one: two runners on two ports) `.localrun/env-PORT`."""
    candidates = [env_file] if env_file is not None else [state_dir() / "env", state_dir() / f"env-{port}"]
    for index, candidate in enumerate(candidates):
        state = InstanceState(candidate)
        try:
            state.acquire()
        except StateInUse:
            if index == len(candidates) - 1:
                raise
            continue
        return state
    raise AssertionError("unreachable: the last candidate raises")


def free_port_after(host: str, port: int) -> int:
    """The first port above `port` that this host can listen on now (what the advice names)."""
    for candidate in range(port + 1, min(port + 100, 65535)):
        try:
            listen(host, candidate).server_close()
        except OSError:
            continue
        return candidate
    return port + 1


def _shown(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def is_keyed(host: FunctionHost) -> bool:
    """Whether the host asks for function keys (CALLER_AUTH=function-key), else each route checks tokens."""
    return any(route.auth_level != "anonymous" for route in host.routes.http)


def caller_header(host: FunctionHost, services: EmbeddedServices | None, function_key: str) -> str:
    """The header a caller sends (`AUTH` in the env file, the tour's `-H "$AUTH"`): the function key,
    or on embedded defaults in `entra` mode a sandbox-signed token holding both app roles."""
    if is_keyed(host):
        return f"x-functions-key: {function_key}"
    if services is not None and os.environ.get("CALLER_AUTH", "") == "entra":
        return f"Authorization: Bearer {services.caller_token(BOTH_ROLES)}"
    return "Authorization: Bearer <a Microsoft Entra ID token for CALLER_AUDIENCES>"


def banner(
    host: FunctionHost,
    base: str,
    function_key: str,
    master_key: str,
    embedded: EmbeddedServices | None,
    env_file: Path,
    auth: str,
) -> str:
    keyed = is_keyed(host)
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
        lines.append(f"  timer {name} [{host.timers.describe(name)}]: run now with")
        lines.append(f'        curl -X POST -H "x-functions-key: $MASTER_KEY" $BASE/admin/functions/{name}')
    mode = (
        "embedded defaults (Azurite + local Partner Center sandbox)"
        if embedded
        else "settings from local.settings.json / environment"
    )
    lines += ["", f"Running on {mode}. Services it calls:", *expected_services(os.environ)]
    shown = _shown(env_file)
    lines += [
        "",
        f"In another terminal: source {shown}   # BASE, KEY, MASTER_KEY, AUTH and the settings above",
        f"  BASE={base}",
        f"  KEY={function_key}",
        f"  MASTER_KEY={master_key}",
        f"  AUTH='{auth}'",
        "Try:",
    ]
    customer = str(uuid.uuid4())
    body = f'{{"customerId": "{customer}", "productFamily": "Azure"}}'
    lines.append(
        f"  curl -s -X POST '{base}/api/product-upgrades' -H '{auth}' -H 'Content-Type: application/json' -d '{body}'"
    )
    if not keyed and embedded is not None and caller_auth == "entra":
        lines.append(f"(that token holds {' and '.join(BOTH_ROLES)}; a sandbox token with only {READ_ROLE}:")
        lines.append(f"  {embedded.token_command((READ_ROLE,))}")
        lines.append(")")
    lines.append("  .venv/bin/python -m shared.cli --help   # the operator CLI, on the same services")
    lines.append("Ctrl-C stops.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
