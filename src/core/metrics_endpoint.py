"""``GET /metrics``: Prometheus text format for this process (and every worker in multiprocess mode)."""

from __future__ import annotations

import os

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

__all__ = ("metrics_endpoint",)


@get("/metrics", operation_id="Metrics", tags=["operations"], cache=False, summary="Prometheus metrics")
async def metrics_endpoint() -> Response[bytes]:
    """Counters, histograms and gauges of SPEC.md in Prometheus' text format."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
