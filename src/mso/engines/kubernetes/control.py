"""Talking to the gateway pod's control relay (see `gatewayd`): set_table, metrics, ping."""

from __future__ import annotations

import json
import socket
from typing import Any


class ControlError(Exception):
    """The gateway could not be reached, refused the token, or rejected a request."""


class GatewayControl:
    """One request per connection: simple, and a gateway restart costs nothing here."""

    def __init__(self, address: str, port: int, token: str, timeout: float = 10.0) -> None:
        self.address, self.port, self.token, self.timeout = address, port, token, timeout

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            with socket.create_connection((self.address, self.port), self.timeout) as sock:
                sock.settimeout(self.timeout)
                stream = sock.makefile("rwb")
                stream.write(json.dumps({"token": self.token}).encode() + b"\n")
                stream.flush()
                hello = json.loads(stream.readline() or b"{}")
                if not hello.get("ok"):
                    raise ControlError(f"gateway refused the control connection: {hello}")
                stream.write(json.dumps(message).encode() + b"\n")
                stream.flush()
                reply: dict[str, Any] = json.loads(stream.readline() or b"{}")
        except (OSError, ValueError) as exc:
            raise ControlError(f"gateway control {self.address}:{self.port}: {exc}") from exc
        if not reply.get("ok"):
            raise ControlError(f"gateway rejected {message.get('op')}: {reply.get('error')}")
        return reply

    def set_table(self, table: dict[str, Any]) -> int:
        return int(self.request({"op": "set_table", "table": table}).get("version", 0))

    def ping(self) -> dict[str, Any]:
        """The supervisor's ping: its serving `proxy` pid, `spare`, `failovers`, `version`."""
        return self.request({"op": "ping"})

    def metrics(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = self.request({"op": "metrics"})["metrics"]
        return snapshot
