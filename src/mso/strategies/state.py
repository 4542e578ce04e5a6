"""The persisted state of one service's rollout, and its phases.

Stored as JSON in the store's `rollouts` table after every decision, so a restarted
control plane resumes from the same step. Analysis evidence is deliberately *not* part
of it: an interrupted analysis starts again and is never counted as passed.

Fields added later (`paused_at`, `waiting_since`, `updated`, `wanted`) have defaults, and
`from_json` ignores keys it does not know, so a state stored by an older or newer mso
still loads: an older paused rollout simply has no recorded pause start (its clocks are
not shifted on resume), an older wait for replicas starts its deadline again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Phase(str, Enum):
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    INCONCLUSIVE = "Inconclusive"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


ACTIVE_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.INCONCLUSIVE})
TERMINAL_PHASES = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED})


@dataclass
class RolloutState:
    """Where one service's move from `from_release` to `to_release` stands."""

    service: str
    strategy: str  # rolling | recreate | canary | blue_green
    from_release: int
    to_release: int
    started: float
    phase: Phase = Phase.PROGRESSING
    step: int = 0
    step_started: float = 0.0
    weight: int = 0
    promoting: bool = False  # canary: stable replicas are being replaced by to_release
    promoted_at: float | None = None  # blue_green: when traffic switched
    paused_by_user: bool = False
    # When the user's pause began: while it lasts the step's clock stands still, and
    # `resume` shifts `step_started` and `waiting_since` by its length.
    paused_at: float | None = None
    # Since when the rollout has been waiting, by itself, for replicas to become ready
    # (canary, preview, or the next updated replica of a rolling update); None when it
    # is not waiting. The progress deadline counts from here.
    waiting_since: float | None = None
    updated: int = 0  # rolling/recreate: new-release replicas READY so far
    wanted: int = 0  # rolling/recreate: replicas wanted
    reason: str = ""
    analysis: dict[str, Any] = field(default_factory=dict)
    finished: float | None = None

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = self.phase.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutState:
        values = dict(data)
        values["phase"] = Phase(values["phase"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})
