"""``GET /metrics``: Prometheus text format for this process, every worker (multiprocess mode)
and the scrape-time gauges read from the database and the broker."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from admin.cleanup import CleanupCollector, CleanupMonitor
from core.openapi import Header, documented
from core.settings import Settings
from jobs.monitoring import MonitoringCache, SnapshotCollector

__all__ = ("forget_dead_processes", "mark_this_process_dead", "metrics_endpoint", "process_registry")

_PID_FILE = re.compile(r"_(\d+)\.db$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_processes(directory: str | None) -> None:
    """Drop live-gauge files of processes that are gone (a crash skips ``mark_process_dead``).

    Counter and histogram files stay, so totals survive restarts.
    """
    if not directory or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        match = _PID_FILE.search(name)
        if match and not _pid_alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), directory)  # type: ignore[no-untyped-call]


def mark_this_process_dead(directory: str | None) -> None:
    """On a clean exit in multiprocess mode, retire this process's live gauges."""
    if directory and os.path.isdir(directory):
        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


class _ProcessCollector(Collector):
    """This process's own metrics (single-process mode)."""

    def collect(self) -> Iterable[Metric]:
        """Everything in the default registry."""
        return REGISTRY.collect()


def process_registry(settings: Settings) -> CollectorRegistry:
    """The counters and histograms of this process, or of every process of the host (multiprocess
    mode): what ``/metrics`` exports and the dashboard's overview reads."""
    registry = CollectorRegistry()
    if settings.prometheus_multiproc_dir:
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ProcessCollector())
    return registry


@get(
    "/metrics",
    operation_id="Metrics",
    tags=["operations"],
    cache=False,
    summary="Prometheus metrics",
    responses={
        200: ResponseSpec(
            data_container=str,
            media_type="text/plain; version=0.0.4",
            description="Prometheus' text format (0.0.4), UTF-8.",
            generate_examples=False,
        )
    },
    operation_class=documented(headers={200: {"Cache-Control": Header("Always `no-store`.", required=True)}}),
)
async def metrics_endpoint(
    monitoring: NamedDependency[MonitoringCache],
    settings: NamedDependency[Settings],
    cleanup_monitor: NamedDependency[CleanupMonitor],
) -> Response[bytes]:
    """Counters, histograms and gauges of SPEC.md in Prometheus' text format."""
    snapshot = await monitoring.get()
    registry = process_registry(settings)
    registry.register(SnapshotCollector(snapshot))
    registry.register(CleanupCollector(await cleanup_monitor.get()))
    # The 0.0.4 text format every Prometheus version parses; set as a header so that Litestar does
    # not append a second charset parameter.
    return Response(
        generate_latest(registry),
        headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Cache-Control": "no-store"},
    )
