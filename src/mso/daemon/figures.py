"""The control plane's own figures, as Prometheus families for the proxy's endpoint.

The daemon hands them to the proxy every `PERIOD` seconds (control op
`set_control_metrics`, see mso.proxy.exposition), so the app has one metrics endpoint.
Counters stay monotonic across replica replacements: each replica's own count is read
as a delta against what was last seen of it (a new supervisor under the same id starts
again from zero, which counts as all new).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

PERIOD = 5.0

Replica = tuple[str, str, str, int, int]  # (id, service, state, restarts, probe failures)


class Figures:
    def __init__(self) -> None:
        self.last_reconcile = 0.0
        self.reconciles = 0
        self._next = 0.0
        self._seen: dict[str, tuple[int, int]] = {}
        self.restarts: Counter[str] = Counter()
        self.probe_failures: Counter[str] = Counter()

    def reconciled(self, seconds: float) -> None:
        self.last_reconcile = seconds
        self.reconciles += 1

    def due(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + PERIOD
        return True

    def _accumulate(self, replicas: list[Replica]) -> None:
        for rid, service, _state, restarts, probes in replicas:
            old_restarts, old_probes = self._seen.get(rid, (0, 0))
            self.restarts[service] += restarts - old_restarts if restarts >= old_restarts \
                else restarts
            self.probe_failures[service] += probes - old_probes if probes >= old_probes \
                else probes
            self._seen[rid] = (restarts, probes)
        live = {r[0] for r in replicas}
        self._seen = {k: v for k, v in self._seen.items() if k in live}

    def families(self, replicas: list[Replica], phases: dict[str, str],
                 weights: dict[str, dict[str, int]]) -> dict[str, Any]:
        self._accumulate(replicas)
        states: Counter[tuple[str, str]] = Counter((r[1], r[2]) for r in replicas)
        return {
            "mso_reconcile_duration_seconds": {
                "help": "Duration of the daemon's last reconcile pass.",
                "samples": [[{}, self.last_reconcile]]},
            "mso_reconciles": {"help": "Reconcile passes of the daemon.",
                               "samples": [[{}, self.reconciles]]},
            "mso_replica_restarts": {
                "help": "Replica restarts (crashes, failed liveness probes) by service.",
                "samples": [[{"service": s}, n] for s, n in sorted(self.restarts.items())]},
            "mso_probe_failures": {
                "help": "Failed health-probe checks (startup, liveness, readiness).",
                "samples": [[{"service": s}, n]
                            for s, n in sorted(self.probe_failures.items())]},
            "mso_replicas": {
                "help": "Replicas by service and state.",
                "samples": [[{"service": s, "state": st}, n]
                            for (s, st), n in sorted(states.items())]},
            "mso_rollout_phase": {
                "help": "1 for the phase of each service's rollout in progress.",
                "samples": [[{"service": s, "phase": p}, 1] for s, p in sorted(phases.items())]},
            "mso_rollout_weight": {
                "help": "Traffic weight (percent) of each subset of a service.",
                "samples": [[{"service": s, "subset": sub}, w]
                            for s, ws in sorted(weights.items()) for sub, w in sorted(ws.items())]},
        }
