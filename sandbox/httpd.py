"""Socket plumbing: threaded HTTP/1.1 servers, optional TLS, and abrupt connection resets.

Standard library only. TLS is negotiated in the per-connection thread (not in ``accept``) so one
slow or failing handshake cannot stall the listener. Open connections are tracked so ``close``
can unblock keep-alive threads at once, and so a "reset" fault can send a real TCP RST.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .wire import Request, Response

if TYPE_CHECKING:
    from .dispatch import Dispatcher

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT = 10.0
MAX_BODY = 16 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into ``Request`` values and implements the dispatcher's ``Channel``."""

    protocol_version = "HTTP/1.1"
    server_version = "PartnerCenterSandbox/1.0"
    sys_version = ""
    server: SandboxHTTPServer

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        request = Request.build(self.command, self.path, self.headers.items(), body)
        self.server.dispatcher.handle(request, self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "Bad Content-Length")
            return None
        if length > MAX_BODY:
            self.send_error(413)
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    # --- Channel ---

    def send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            # Head and body in one write: two small writes meet Nagle + delayed ACK (~40 ms each).
            buffer: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]  # BaseHTTPRequestHandler's private buffer
            buffer.append(b"\r\n")
            if self.command != "HEAD":
                buffer.append(response.body)
            self.flush_headers()
        except OSError:
            self.close_connection = True  # the client went away (e.g. it timed out)

    def trickle(self, response: Response, seconds_per_byte: float, wait: Callable[[float], bool]) -> None:
        """Send the whole answer one byte every `seconds_per_byte` (a server that is alive but
        slow: each read gets a byte in time, so only a total deadline stops the client)."""
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        buffer: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]  # BaseHTTPRequestHandler's private buffer
        buffer.append(b"\r\n")
        data = b"".join(buffer) + (response.body if self.command != "HEAD" else b"")
        buffer.clear()
        try:
            for index in range(len(data)):
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()
                if wait(seconds_per_byte):  # True: the sandbox is stopping
                    break
        except OSError:
            pass  # the client gave up
        self.close_connection = True

    def reset(self) -> None:
        """Drop the connection with a TCP RST and no HTTP response."""
        self.close_connection = True
        abort_connection(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def abort_connection(sock: socket.socket) -> None:
    """Close ``sock`` so the peer sees a connection reset (SO_LINGER 0 -> RST, no TLS close_notify)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        # Detach so the descriptor closes now, even though the handler's rfile/wfile still hold
        # the socket object, and (for TLS) without sending a close_notify alert.
        raw = socket.socket(fileno=sock.detach())
        raw.close()
    except OSError:
        pass


class SandboxHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP/1.1 server on 127.0.0.1, optionally TLS, dispatching to a ``Dispatcher``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, dispatcher: Dispatcher, tls: ssl.SSLContext | None = None) -> None:
        self.dispatcher = dispatcher
        self._tls = tls
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        connection: socket.socket = request
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            try:
                request.settimeout(HANDSHAKE_TIMEOUT)
                connection = self._tls.wrap_socket(request, server_side=True)
                connection.settimeout(None)
            except (OSError, ssl.SSLError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                request.close()
                return
        with self._connections_lock:
            self._connections.add(connection)
        try:
            self.RequestHandlerClass(connection, client_address, self)  # type: ignore[arg-type]  # typeshed's Self for the server
        finally:
            with self._connections_lock:
                self._connections.discard(connection)
            if connection is not request:
                with contextlib.suppress(OSError):
                    connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Shut down every open connection so blocked keep-alive threads return."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class ServerThread:
    """Runs one server's ``serve_forever`` in a daemon thread."""

    POLL_INTERVAL = 0.05  # shutdown() waits up to one poll interval

    def __init__(self, server: SandboxHTTPServer, name: str) -> None:
        self.server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": self.POLL_INTERVAL}, name=name, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.close_connections()
        self.server.server_close()
        self._thread.join(timeout=5)
