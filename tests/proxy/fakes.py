"""A stand-in for an asyncio transport, for driving the proxy's protocols without sockets."""
from __future__ import annotations

from typing import Any


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def writelines(self, data: list[bytes]) -> None:
        self.sent.append(b"".join(data))

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, key: str) -> Any:
        return None if key == "socket" else ("127.0.0.1", 5555)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
