"""A proxy in front of Azurite that lets a given number of storage requests through, then none:
a storage outage (or the process's crash) at an exact point of an operation's writes.

Counted per HTTP request (urllib3 sends one request per connection at a time, so requests are
delimited by their headers and `Content-Length`); answers pass through untouched. Once the
allowance is used up, every further request's connection is closed before it is forwarded: the
write never reaches storage, and the operation sees a dead storage service until `restore()`.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class StorageOutage:
    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._allowance: int | None = None  # None: no outage armed
        self.forwarded = 0  # requests forwarded since `after` armed the outage
        self.refused = 0  # requests refused while it lasted
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def connection_string(self, azurite_connection_string: str) -> str:
        return azurite_connection_string.replace(f":{self._upstream}/", f":{self.port}/")

    def after(self, requests: int) -> None:
        """From now on, forward `requests` more storage requests, then refuse every one."""
        with self._lock:
            self._allowance, self.forwarded, self.refused = requests, 0, 0

    def restore(self) -> None:
        with self._lock:
            self._allowance = None

    def _admit(self) -> bool:
        with self._lock:
            if self._allowance is None:
                return True
            if self.forwarded < self._allowance:
                self.forwarded += 1
                return True
            self.refused += 1
            return False

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        buffer = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = client.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buffer) < length:
                    data = client.recv(65536)
                    if not data:
                        return
                    buffer += data
                body, buffer = buffer[:length], buffer[length:]
                if not self._admit():
                    return  # closed unanswered: the request never reached storage
                upstream.sendall(head + b"\r\n\r\n" + body)
        except OSError:
            pass
        finally:
            for end in (client, upstream):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    end.close()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
