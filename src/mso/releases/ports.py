"""The named ports of a stored release, in the order the manifest wrote them.

Engine-neutral: every engine, the rollout controller and the CLI's views read ports
through `port_map`, so the first port written is `PORT` everywhere.
"""

from __future__ import annotations

from typing import Any


def port_map(model: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Named ports of a dumped service model: name -> (protocol, declared port)."""
    result: dict[str, tuple[str, int]] = {}
    for name, port in (model.get("ports") or {}).items():
        if isinstance(port, dict):
            result[name] = (str(port.get("protocol", "http")), int(port["port"]))
        else:
            result[name] = ("http", int(port))
    return result
