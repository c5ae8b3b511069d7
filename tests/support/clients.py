"""Clients that misbehave on purpose, over raw sockets (loopback only)."""

from __future__ import annotations

import socket
import threading


class StalledClient(threading.Thread):
    """Sends request headers and ``send`` bytes of a body announced as ``length``, then stalls.

    Ends when the server answers or closes, or after ``stall`` seconds; keeps the status line.
    """

    def __init__(
        self,
        port: int,
        *,
        send: int,
        length: int,
        stall: float,
        path: str = "/v1/batch",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.send_bytes, self.length, self.stall = port, send, length, stall
        self.path = path
        self.headers = headers or {}
        self.status: int | None = None
        self.response = b""
        self.sent = 0

    def run(self) -> None:
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {self.length}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
            + "\r\n"
        ).encode()
        chunk = b" " * 65_536
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=self.stall) as sock:
                sock.sendall(head + b"{")
                self.sent = 1
                while self.sent < self.send_bytes:
                    piece = chunk[: self.send_bytes - self.sent]
                    sock.sendall(piece)
                    self.sent += len(piece)
                # Stall: read the server's answer until it closes, without sending the rest.
                while True:
                    data = sock.recv(65_536)
                    if not data:
                        break
                    self.response += data
        except OSError:
            pass  # refused, reset or timed out: the status (if any) says which
        if self.response.startswith(b"HTTP/1.1 "):
            self.status = int(self.response[9:12])
