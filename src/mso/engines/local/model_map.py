"""Mapping a release's probe and stop settings onto the local engine's runtime types."""

from __future__ import annotations

import signal
from typing import Any, Literal

from mso.engines.local.probes import ProbeSpec


def probe_spec(probe: dict[str, Any] | None,
               ports: dict[str, tuple[str, int]] | None = None) -> ProbeSpec | None:
    """The runtime's probe for a dumped probe model; `ports` (see `port_map`) picks the
    port an http probe without `port:` checks: the first http port, as documented."""
    if not probe:
        return None
    kind: Literal["http", "tcp", "exec"]
    target: str | list[str]
    if probe.get("http") is not None:
        kind, target = "http", probe["http"]
    elif probe.get("tcp") is not None:
        kind, target = "tcp", probe["tcp"]
    else:
        kind, target = "exec", list(probe["exec"])
    port_name = probe.get("port")
    if port_name is None and kind == "http" and ports:
        port_name = next((n for n, (proto, _) in ports.items() if proto == "http"), None)
    return ProbeSpec(kind=kind, target=target, port_name=port_name,
                     period=float(probe["period"]), timeout=float(probe["timeout"]),
                     failure_threshold=int(probe["failure_threshold"]),
                     success_threshold=int(probe["success_threshold"]),
                     initial_delay=float(probe.get("initial_delay") or 0.0))


def stop_signal(name: str) -> int:
    upper = name.upper()
    return int(getattr(signal, upper if upper.startswith("SIG") else "SIG" + upper))
