"""Pipeline steps, their progress ranges (part of the contract) and progress arithmetic.

Pure functions only, so the rules that clients depend on are easy to test.
"""

from __future__ import annotations

import math
from typing import Final, Literal

__all__ = (
    "FINAL_STATUSES",
    "PIPELINE_STEPS",
    "STEPS",
    "STEP_RANGES",
    "JobStatus",
    "Step",
    "ai_wait_progress",
    "is_forward",
    "step_index",
)

JobStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]
#: The states a job never leaves (except by an operator's retry of a failed or cancelled one).
FINAL_STATUSES: Final[frozenset[str]] = frozenset({"completed", "failed", "cancelled"})
Step = Literal[
    "queued",
    "validating_exam",
    "processing_answers",
    "getting_ai_recommendations",
    "finalizing_results",
    "completed",
    "failed",
    "cancelled",
]

#: The steps a job walks through, in order (``failed`` or ``cancelled`` may end it at any point).
STEPS: Final[tuple[Step, ...]] = (
    "queued",
    "validating_exam",
    "processing_answers",
    "getting_ai_recommendations",
    "finalizing_results",
    "completed",
)
#: The steps a worker runs.
PIPELINE_STEPS: Final[tuple[Step, ...]] = STEPS[1:5]
#: Progress while in each step: (at entry, at most before the next step).
STEP_RANGES: Final[dict[Step, tuple[int, int]]] = {
    "queued": (0, 0),
    "validating_exam": (0, 5),
    "processing_answers": (5, 20),
    "getting_ai_recommendations": (20, 90),
    "finalizing_results": (90, 100),
    "completed": (100, 100),
}


def step_index(step: str) -> int:
    """Position of ``step`` in :data:`STEPS` (``failed`` and ``cancelled`` sort after everything)."""
    if step in ("failed", "cancelled"):
        return len(STEPS)
    return STEPS.index(step)


def is_forward(current: str, new: str) -> bool:
    """Whether moving from step ``current`` to ``new`` keeps the order (staying is allowed)."""
    return step_index(new) >= step_index(current)


def ai_wait_progress(elapsed: float, expected: float, timeout: float, start: int) -> int:
    """Progress to show ``elapsed`` seconds into the AI call.

    The bar climbs from ``start`` (at least 20) to a knee at the expected duration, then on
    towards 89 until the request times out, never claiming the call is done (90 belongs to
    finalizing). The knee is 80, lowered when needed so that the tail still gains a point at
    least every 2 s (SPEC: progress keeps moving while waiting).
    """
    low, high = STEP_RANGES["getting_ai_recommendations"]
    top = high - 1
    start = min(max(start, low), top)
    expected = max(expected, 0.001)
    tail_seconds = max(timeout - expected, 0.001)
    # (A hair of float noise, 18.000000000000004 s of tail, must not cost the knee a point.)
    knee = max(start, min(80, top - math.ceil(tail_seconds / 2 - 1e-9)))
    if elapsed <= expected:
        value = start + (knee - start) * (elapsed / expected)
    else:
        value = knee + (top - knee) * min((elapsed - expected) / tail_seconds, 1.0)
    return int(min(max(value, start), top))
