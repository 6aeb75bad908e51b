"""A loopback HTTP server that dispatches to the app's functions the way the Functions host does.

- `/api/<route>`: the HTTP function whose route and method match, called with a
  `func.HttpRequest` (method, url, headers, query, route params, body); its `func.HttpResponse`
  is written back as is.
- Function keys as in Azure: `authLevel: function` routes need the function key in the
  `x-functions-key` header or the `code` query parameter, else 401.
- `POST /admin/functions/<name>`: runs a non-HTTP function now (as Core Tools' admin API does),
  with the master key.
- Anything else: 404.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from .listener import listen
from .routes import RouteTable
from .timers import TimerScheduler

log = logging.getLogger("localrun.http")

ROUTE_PREFIX = "/api/"
MAX_BODY_BYTES = 100 * 1024 * 1024  # the host's default request size limit


class FunctionHost:
    """Routes + keys + timers of one FunctionApp, served on `host:port`."""

    def __init__(
        self,
        functions: list[Any],
        *,
        function_key: str,
        master_key: str,
        listener: ThreadingHTTPServer | None = None,
    ) -> None:
        """`functions`: `FunctionApp.get_functions()` (which may be called once per app);
        `listener`: a socket bound earlier with `listen` (the runner binds before slow start-up work)."""
        self.routes = RouteTable(functions)
        self.timers = TimerScheduler({f.get_function_name(): f for f in functions})
        self.function_key = function_key
        self.master_key = master_key
        self._server = listener
        if listener is not None:
            listener.RequestHandlerClass = type("Handler", (_Handler,), {"function_host": self})
        self._thread: threading.Thread | None = None

    def serve(self, host: str, port: int) -> int:
        """Start serving in a background thread (binding first unless given a listener); the port."""
        if self._server is None:
            self._server = listen(host, port)
            self._server.RequestHandlerClass = type("Handler", (_Handler,), {"function_host": self})
        self._thread = threading.Thread(target=self._server.serve_forever, name="localrun-http", daemon=True)
        self._thread.start()
        return self._server.server_address[1]

    def shutdown(self) -> None:
        self.timers.stop()
        if self._server is not None:
            if self._thread is not None:  # shutdown() waits for serve_forever: only if it runs
                self._server.shutdown()
            self._server.server_close()

    def authorized(self, auth_level: str, headers: Any, query: dict[str, str], *, admin: bool = False) -> bool:
        if auth_level == "anonymous" and not admin:
            return True
        offered = headers.get("x-functions-key") or query.get("code")
        allowed = {self.master_key} if admin or auth_level == "admin" else {self.function_key, self.master_key}
        return offered in allowed


_SECRET_QUERY = re.compile(r"(?i)([?&](?:code|sig|token|access_token|key)=)[^&\s\"]*")
_CREDENTIAL_HEADER = re.compile(r"(?i)\b(authorization|x-functions-key)(\s*[:=]\s*)[^\r\n\"]*")


def redact(line: str) -> str:
    """`?code=<key>` -> `?code=***`; `Authorization: ...`/`x-functions-key: ...` values -> `***`."""
    return _CREDENTIAL_HEADER.sub(r"\1\2***", _SECRET_QUERY.sub(r"\1***", line))


class _Handler(BaseHTTPRequestHandler):
    function_host: FunctionHost
    protocol_version = "HTTP/1.1"
    server_version = "localrun"

    def __getattr__(self, name: str) -> Any:
        """Every method (GET, POST ..., TRACE, anything) goes through the route table, as on the
        host: a method no route declares is a 404, not the stdlib's 501."""
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        """The access log: never a function key (`?code=`) or a credential in clear."""
        log.info("%s %s", self.address_string(), redact(format % args))

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(413, b"", {})
            return
        body = self.rfile.read(length) if length else b""
        host = self.function_host
        if url.path.startswith("/admin/functions/") and self.command == "POST":
            self._admin(url.path.rsplit("/", 1)[-1], query)
            return
        if not url.path.startswith(ROUTE_PREFIX):
            self._reply(404, b"", {})
            return
        matched = host.routes.match(self.command, url.path[len(ROUTE_PREFIX) - 1 :])
        if matched is None:
            self._reply(404, b"", {})
            return
        route, route_params = matched
        if not host.authorized(route.auth_level, self.headers, query):
            self._reply(401, b"", {})
            return
        request = func.HttpRequest(
            method=self.command,
            url=f"http://{self.headers.get('Host') or 'localhost'}{self.path}",
            headers=dict(self.headers.items()),
            params=query,
            route_params=route_params,
            body=body,
        )
        try:
            response = route.user_function(request)
        except Exception:  # the host answers 500 with no details when a function throws
            log.exception("function.failed function=%s", route.function_name)
            self._reply(500, b"", {})
            return
        headers = dict(response.headers.items())
        if response.mimetype and not any(name.lower() == "content-type" for name in headers):
            charset = f"; charset={response.charset}" if response.charset else ""
            headers["Content-Type"] = response.mimetype + charset
        self._reply(response.status_code, response.get_body() or b"", headers)

    def _admin(self, name: str, query: dict[str, str]) -> None:
        host = self.function_host
        if not host.authorized("admin", self.headers, query, admin=True):
            self._reply(401, b"", {})
            return
        if name not in host.timers.names:
            self._reply(404, b"", {})
            return
        try:
            host.timers.fire(name)
        except Exception as error:
            log.exception("function.failed function=%s", name)
            body = json.dumps({"function": name, "error": type(error).__name__}).encode()
            self._reply(500, body, {"Content-Type": "application/json"})
            return
        self._reply(202, b"", {})

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
