"""Canary analysis: anytime-valid sequential judges over metric providers.

Public API: :class:`AnalysisConfig`, :class:`CanaryJudge` (``observe`` / ``conclude`` /
``reset``), :class:`Verdict`, :class:`SubsetWindow`, :func:`window_from_snapshots`, and the
providers in :mod:`mso.analysis.providers`; :mod:`mso.analysis.run` combines the judge with
the manifest's providers. See :mod:`mso.analysis.judge` for the guarantees and
:mod:`mso.analysis.run` for why a provider is a guardrail rather than a test.
"""

from __future__ import annotations

from mso.analysis.judge import (
    AnalysisConfig,
    CanaryJudge,
    SnapshotError,
    SubsetStats,
    SubsetWindow,
    Verdict,
    VerdictKind,
    window_from_snapshots,
)
from mso.analysis.providers import (
    Measurement,
    MetricProvider,
    PrometheusProvider,
    ProxyMetricsProvider,
    WebhookProvider,
)

__all__ = [
    "AnalysisConfig",
    "CanaryJudge",
    "Measurement",
    "MetricProvider",
    "PrometheusProvider",
    "ProxyMetricsProvider",
    "SnapshotError",
    "SubsetStats",
    "SubsetWindow",
    "Verdict",
    "VerdictKind",
    "WebhookProvider",
    "window_from_snapshots",
]
