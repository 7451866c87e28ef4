"""The overview's figures, from the sources ``/metrics`` uses: the monitoring snapshot (job
counts, queue depth, workers, stalled jobs), the process's Prometheus families (AI latency and
errors, time per step) and index-range queries on the jobs table (the last hour and day).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client.metrics_core import Metric

from admin.cleanup import CleanupFigures, cleanup_figures
from core.db import Database
from jobs.admin_queries import HourBucket, Timings, finished_since, hourly_counts, recent_timings
from jobs.models import utcnow
from jobs.monitoring import MonitoringCache, Snapshot
from jobs.progress import PIPELINE_STEPS

__all__ = ("MetricReader", "Overview", "Quantiles", "build_overview", "histogram_quantile", "read_metrics")

#: Returns the metric families ``/metrics`` exports for this process (and its workers' files).
MetricReader = Callable[[], Iterable[Metric]]


@dataclass
class Quantiles:
    """Observations of one histogram: how many, p50 and p95 (seconds)."""

    count: float = 0.0
    p50: float | None = None
    p95: float | None = None


@dataclass
class ProcessMetrics:
    """What the overview reads from the Prometheus families."""

    ai_outcomes: dict[str, float] = field(default_factory=dict)
    ai_latency: Quantiles = field(default_factory=Quantiles)
    stages: dict[str, Quantiles] = field(default_factory=dict)

    @property
    def ai_calls(self) -> float:
        """AI requests made (disabled ones are not requests)."""
        return sum(v for k, v in self.ai_outcomes.items() if k != "disabled")

    @property
    def ai_error_rate(self) -> float:
        """Share of AI requests that failed or timed out."""
        calls = self.ai_calls
        bad = self.ai_outcomes.get("error", 0.0) + self.ai_outcomes.get("timeout", 0.0)
        return bad / calls if calls else 0.0


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative ``(le, count)`` buckets."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    previous_le, previous_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return previous_le
            width = count - previous_count
            if width <= 0:
                return le
            return previous_le + (le - previous_le) * (rank - previous_count) / width
        previous_le, previous_count = le, count
    return previous_le


def _quantiles(samples: list[tuple[float, float]], count: float) -> Quantiles:
    return Quantiles(count, histogram_quantile(0.5, samples), histogram_quantile(0.95, samples))


def read_metrics(families: Iterable[Metric]) -> ProcessMetrics:
    """AI outcomes and latency, and time per pipeline step, from the exported families."""
    result = ProcessMetrics()
    stage_buckets: dict[str, list[tuple[float, float]]] = {}
    stage_counts: dict[str, float] = {}
    ai_buckets: list[tuple[float, float]] = []
    ai_count = 0.0
    for family in families:
        for sample in family.samples:
            if sample.name == "exams_ai_requests_total":
                outcome = sample.labels.get("outcome", "")
                result.ai_outcomes[outcome] = result.ai_outcomes.get(outcome, 0.0) + sample.value
            elif sample.name == "exams_ai_request_duration_seconds_bucket":
                ai_buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == "exams_ai_request_duration_seconds_count":
                ai_count += sample.value
            elif sample.name == "exams_job_stage_duration_seconds_bucket":
                stage_buckets.setdefault(sample.labels["stage"], []).append((float(sample.labels["le"]), sample.value))
            elif sample.name == "exams_job_stage_duration_seconds_count":
                stage = sample.labels["stage"]
                stage_counts[stage] = stage_counts.get(stage, 0.0) + sample.value
    result.ai_latency = _quantiles(_merge(ai_buckets), ai_count)
    for stage in PIPELINE_STEPS:
        result.stages[stage] = _quantiles(_merge(stage_buckets.get(stage, [])), stage_counts.get(stage, 0.0))
    return result


def _merge(buckets: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sum buckets of the same bound (several processes' files in multiprocess mode)."""
    merged: dict[float, float] = {}
    for le, count in buckets:
        merged[le] = merged.get(le, 0.0) + count
    return sorted(merged.items())


@dataclass
class Overview:
    """Everything the overview page shows."""

    snapshot: Snapshot
    last_hour: dict[str, int]
    last_day: dict[str, int]
    hourly: list[HourBucket]
    timings: Timings
    metrics: ProcessMetrics
    cleanup: CleanupFigures

    @staticmethod
    def failure_rate(counts: dict[str, int]) -> float:
        """Failed share of the finished jobs."""
        finished = counts.get("completed", 0) + counts.get("failed", 0)
        return counts.get("failed", 0) / finished if finished else 0.0


async def build_overview(database: Database, monitoring: MonitoringCache, reader: MetricReader) -> Overview:
    """Read every figure of the overview (a few index-range queries and the cached snapshot)."""
    snapshot = await monitoring.get()
    now = utcnow()
    async with database.sessions() as session:
        last_hour = await finished_since(session, now - timedelta(hours=1))
        last_day = await finished_since(session, now - timedelta(days=1))
        hourly = await hourly_counts(session, hours=24, now=now)
        timings = await recent_timings(session, since=now - timedelta(days=1))
        cleanup = await cleanup_figures(session)
    return Overview(snapshot, last_hour, last_day, hourly, timings, read_metrics(reader()), cleanup)
