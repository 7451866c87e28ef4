"""Pipeline steps, their progress ranges (part of the contract) and progress arithmetic.

Pure functions only, so the rules that clients depend on are easy to test.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = (
    "PIPELINE_STEPS",
    "STEPS",
    "STEP_RANGES",
    "JobStatus",
    "Step",
    "ai_wait_progress",
    "is_forward",
    "step_index",
)

JobStatus = Literal["pending", "processing", "completed", "failed"]
Step = Literal[
    "queued",
    "validating_exam",
    "processing_answers",
    "getting_ai_recommendations",
    "finalizing_results",
    "completed",
    "failed",
]

#: The steps a job walks through, in order (``failed`` may end it at any point).
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
    """Position of ``step`` in :data:`STEPS` (``failed`` sorts after everything)."""
    if step == "failed":
        return len(STEPS)
    return STEPS.index(step)


def is_forward(current: str, new: str) -> bool:
    """Whether moving from step ``current`` to ``new`` keeps the order (staying is allowed)."""
    return step_index(new) >= step_index(current)


def ai_wait_progress(elapsed: float, expected: float, timeout: float, start: int) -> int:
    """Progress to show ``elapsed`` seconds into the AI call.

    The bar moves from ``start`` (at least 20) to 80 over the expected duration, then crawls on
    to 89 until the request times out, so it keeps moving for the whole wait and never
    claims the call is done (90 belongs to finalizing).
    """
    low, high = STEP_RANGES["getting_ai_recommendations"]
    start = min(max(start, low), high - 1)
    knee = max(start, 80)
    expected = max(expected, 0.001)
    if elapsed <= expected:
        value = start + (knee - start) * (elapsed / expected)
    else:
        tail = max(timeout - expected, 0.001)
        value = knee + (high - 1 - knee) * min((elapsed - expected) / tail, 1.0)
    return int(min(max(value, start), high - 1))
