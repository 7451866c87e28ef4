"""Timing shared by the benchmarks: how long each of ``repeat`` awaited calls takes, in milliseconds,
and the one 99th percentile they all print."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable


async def time_ms(call: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    """One sample per call, in milliseconds (the caller takes the median)."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def p99(samples: list[float]) -> float:
    """The 99th percentile (the largest sample for fewer than 100)."""
    return statistics.quantiles(samples, n=100)[98] if len(samples) >= 100 else max(samples)
