"""The runner's listening socket, bound before anything slow starts.

Kept free of azure.functions (slow to import) so `python -m localrun` can bind its port first:
a port in use is reported at once, before Azurite or the sandbox start.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def listen(host: str, port: int) -> ThreadingHTTPServer:
    """A bound, not yet serving, listener (0 picks a free port); OSError (EADDRINUSE) if taken.
    `FunctionHost` sets the real request handler."""
    server = ThreadingHTTPServer((host, port), BaseHTTPRequestHandler)
    server.daemon_threads = True
    return server
