"""The persisted state of one service's rollout, and its phases.

Stored as JSON in the store's `rollouts` table after every decision, so a restarted
control plane resumes from the same step. Analysis evidence is deliberately *not* part
of it: an interrupted analysis starts again and is never counted as passed.
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
