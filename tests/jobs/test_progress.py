"""Progress arithmetic and the job model's state helpers (pure: no database, no server)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.models import ExamProcessingJob, InvalidTransitionError
from jobs.progress import PIPELINE_STEPS, STEP_RANGES, STEPS, ai_wait_progress, is_forward, step_index

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LIVE_STEPS = list(STEPS)  # every step a running job can be in
AI_LOW, AI_HIGH = STEP_RANGES["getting_ai_recommendations"]

elapsed_st = st.floats(min_value=0, max_value=10_000, allow_nan=False, allow_infinity=False)
expected_st = st.floats(min_value=0.5, max_value=120, allow_nan=False, allow_infinity=False)
timeout_st = st.floats(min_value=0.5, max_value=600, allow_nan=False, allow_infinity=False)
start_st = st.integers(min_value=0, max_value=100)


# --- ai_wait_progress -------------------------------------------------------------------------


@given(elapsed=elapsed_st, expected=expected_st, timeout=timeout_st, start=start_st)
def test_ai_wait_progress_stays_in_the_ai_range(elapsed: float, expected: float, timeout: float, start: int) -> None:
    value = ai_wait_progress(elapsed, expected, timeout, start)
    assert isinstance(value, int)
    assert max(min(start, AI_HIGH - 1), AI_LOW) <= value <= AI_HIGH - 1 == 89


@given(
    a=elapsed_st,
    b=elapsed_st,
    expected=expected_st,
    timeout=timeout_st,
    start=st.integers(min_value=20, max_value=89),
)
def test_ai_wait_progress_never_decreases(a: float, b: float, expected: float, timeout: float, start: int) -> None:
    early, late = sorted((a, b))
    assert ai_wait_progress(early, expected, timeout, start) <= ai_wait_progress(late, expected, timeout, start)


@given(expected=expected_st, start=st.integers(min_value=20, max_value=80), data=st.data())
def test_ai_wait_progress_reaches_80_at_the_expected_duration(expected: float, start: int, data: Any) -> None:
    # Restricted to timeouts whose tail (80 → 89) can still move every 2 s, so this stays
    # compatible with the "keeps moving" rule whatever way that rule gets fixed.
    timeout = data.draw(st.floats(min_value=expected, max_value=expected + 18))
    assert ai_wait_progress(expected, expected, timeout, start) == 80
    assert ai_wait_progress(0, expected, timeout, start) == start


def test_ai_wait_progress_starts_at_start_and_ends_below_finalizing() -> None:
    assert ai_wait_progress(0, 35, 60, 20) == 20
    assert ai_wait_progress(60, 35, 60, 20) == 89
    assert ai_wait_progress(10_000, 35, 60, 20) == 89
    assert ai_wait_progress(0, 35, 60, 5) == 20  # never below the step's range
    assert ai_wait_progress(0, 35, 60, 95) == 89  # never reaches finalizing's 90


def test_ai_wait_progress_moves_every_two_seconds_for_the_whole_timeout() -> None:
    """SPEC: progress keeps moving while waiting for the AI (at least every 2 s), up to the timeout."""
    stuck = [
        (t, ai_wait_progress(t, 35, 60, 20))
        for t in range(59)
        if ai_wait_progress(t, 35, 60, 20) == ai_wait_progress(t + 2, 35, 60, 20)
    ]
    assert stuck == [], f"progress unchanged over 2 s at (t, value): {stuck}"


# --- step order --------------------------------------------------------------------------------


def test_step_index_follows_the_pipeline_order() -> None:
    order = [
        "queued",
        "validating_exam",
        "processing_answers",
        "getting_ai_recommendations",
        "finalizing_results",
        "completed",
    ]
    assert [step_index(s) for s in order] == list(range(6))
    assert step_index("failed") > step_index("completed")
    assert list(PIPELINE_STEPS) == order[1:5]
    with pytest.raises(ValueError, match="not in"):
        step_index("sleeping")


@given(a=st.sampled_from([*STEPS, "failed"]), b=st.sampled_from([*STEPS, "failed"]))
def test_is_forward_matches_step_index(a: str, b: str) -> None:
    assert is_forward(a, b) == (step_index(b) >= step_index(a))
    assert is_forward(a, a)
    if a != b:
        assert is_forward(a, b) != is_forward(b, a)


# --- the model's helpers (no database) ---------------------------------------------------------


def new_job(**fields: Any) -> ExamProcessingJob:
    """A job as the database would hand it back after insert (column defaults applied)."""
    values: dict[str, Any] = {
        "job_id": uuid4(),
        "exam_code": "MATH-101",
        "student_id": "s-1",
        "answers": {"q1": "b"},
        "status": "pending",
        "progress": 0,
        "current_step": "queued",
        "attempts": 0,
        "locale": "en",
        "version": 1,
    }
    values.update(fields)
    return ExamProcessingJob(**values)


def running_job(step: str = "getting_ai_recommendations", progress: int = 37) -> ExamProcessingJob:
    job = new_job()
    job.mark_processing(NOW)
    job.enter_step(step, NOW)  # type: ignore[arg-type]
    job.update_progress(progress, NOW)
    return job


operation_st = st.one_of(
    st.tuples(st.just("enter"), st.sampled_from(LIVE_STEPS), st.just(0)),
    st.tuples(st.just("update"), st.sampled_from([None, *LIVE_STEPS]), st.integers(-10, 120)),
)


@given(operations=st.lists(operation_st, max_size=30))
def test_progress_and_step_never_go_back(operations: list[tuple[str, str | None, int]]) -> None:
    job = new_job()
    job.mark_processing(NOW)
    for kind, step, value in operations:
        before = (job.progress, job.current_step, job.status)
        try:
            if kind == "enter":
                job.enter_step(step, NOW)  # type: ignore[arg-type]
            else:
                job.update_progress(value, NOW, step)  # type: ignore[arg-type]
        except InvalidTransitionError:
            assert step is not None
            assert step_index(step) < step_index(before[1])
            assert (job.progress, job.current_step, job.status) == before  # nothing half-changed
            continue
        assert job.progress >= before[0]
        assert 0 <= job.progress <= 100
        assert step_index(job.current_step) >= step_index(before[1])


def test_enter_step_starts_at_the_step_range_and_never_lowers() -> None:
    job = new_job()
    job.mark_processing(NOW)
    for step in PIPELINE_STEPS:
        job.enter_step(step, NOW)
        assert (job.current_step, job.progress) == (step, STEP_RANGES[step][0])
    job = running_job("getting_ai_recommendations", 60)
    job.enter_step("getting_ai_recommendations", NOW)  # staying is fine, and keeps 60
    assert job.progress == 60
    job.update_progress(30, NOW)
    assert job.progress == 60


def test_going_back_a_step_is_refused() -> None:
    job = running_job("getting_ai_recommendations", 50)
    with pytest.raises(InvalidTransitionError):
        job.enter_step("processing_answers", NOW)
    with pytest.raises(InvalidTransitionError):
        job.update_progress(70, NOW, "validating_exam")
    assert (job.current_step, job.progress) == ("getting_ai_recommendations", 50)


def test_mark_processing_counts_attempts_and_keeps_the_first_start() -> None:
    job = new_job()
    job.mark_processing(NOW)
    later = datetime(2026, 11, 28, 12, 5, tzinfo=UTC)
    job.mark_processing(later)
    assert (job.status, job.attempts, job.started_at, job.heartbeat_at) == ("processing", 2, NOW, later)


def test_mark_completed_sets_100() -> None:
    job = running_job("finalizing_results", 95)
    job.error_message = "an earlier attempt failed"
    job.mark_completed({"score": 1}, NOW)
    assert (job.status, job.current_step, job.progress) == ("completed", "completed", 100)
    assert job.result == {"score": 1}
    assert job.error_message is None
    assert job.completed_at == NOW
    assert job.is_finished


def test_mark_failed_keeps_progress_and_records_the_step() -> None:
    job = running_job("getting_ai_recommendations", 42)
    job.mark_failed("HTTP 500 from AI API", NOW)
    assert (job.status, job.current_step, job.progress) == ("failed", "failed", 42)
    assert job.failed_step == "getting_ai_recommendations"
    assert job.error_message == "HTTP 500 from AI API"
    assert job.failed_at == NOW
    assert job.completed_at == NOW
    assert job.heartbeat_at is None


def test_reset_for_retry_returns_to_pending_at_the_failed_step() -> None:
    job = running_job("getting_ai_recommendations", 42)
    job.grading = {"score": 3}
    job.mark_failed("boom", NOW)
    job.reset_for_retry()
    assert (job.status, job.current_step, job.progress) == ("pending", "getting_ai_recommendations", 42)
    assert job.failed_step is None
    assert job.error_message is None
    assert job.completed_at is None
    assert job.failed_at is None
    assert job.grading == {"score": 3}  # finished work is kept
    # and the retry can carry on from there
    job.mark_processing(NOW)
    job.update_progress(50, NOW)
    assert job.attempts == 2
    with pytest.raises(InvalidTransitionError):
        job.enter_step("processing_answers", NOW)


def test_only_failed_jobs_can_be_reset() -> None:
    for job in (new_job(), running_job()):
        with pytest.raises(InvalidTransitionError):
            job.reset_for_retry()
    done = running_job("finalizing_results", 90)
    done.mark_completed({}, NOW)
    with pytest.raises(InvalidTransitionError):
        done.reset_for_retry()


@pytest.mark.parametrize("final", ["completed", "failed"])
def test_finished_jobs_refuse_changes(final: str) -> None:
    job = running_job("finalizing_results", 92)
    if final == "completed":
        job.mark_completed({"score": 1}, NOW)
    else:
        job.mark_failed("boom", NOW)
    before = (job.status, job.current_step, job.progress, job.attempts)
    changes = [
        lambda: job.mark_processing(NOW),
        lambda: job.enter_step("completed", NOW),
        lambda: job.update_progress(99, NOW),
        lambda: job.mark_completed({"score": 2}, NOW),
        lambda: job.mark_failed("again", NOW),
    ]
    for change in changes:
        with pytest.raises(InvalidTransitionError):
            change()
    assert (job.status, job.current_step, job.progress, job.attempts) == before


def test_float_noise_in_the_tail_does_not_lower_the_knee() -> None:
    # Found by Hypothesis: 138.0 - 119.99999999999999 is a hair over 18 s of tail.
    expected = 119.99999999999999
    assert ai_wait_progress(expected, expected, 138.0, 20) == 80
