"""Prometheus metrics of SPEC.md that processes record as things happen.

Counters and histograms live here (in multiprocess mode, when ``PROMETHEUS_MULTIPROC_DIR``
is set before start-up, their values go to files shared by web and worker processes).
Gauges that describe the database or the broker are computed at scrape time elsewhere.
No job, exam or student id is ever a label value.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = (
    "AI_CIRCUIT_OPEN",
    "AI_FALLBACKS",
    "AI_IN_FLIGHT",
    "AI_REQUESTS",
    "AI_REQUEST_DURATION",
    "CALLBACKS",
    "JOBS_FINISHED",
    "JOBS_SUBMITTED",
    "JOB_DURATION",
    "JOB_RETRIES",
    "JOB_STAGE_DURATION",
    "SCHEDULER_LAST_RUN",
)

# A job takes ~35 s end to end (the AI call dominates); retries with back-off stretch it to minutes.
_JOB_BUCKETS = (1, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 90, 120, 180, 300, 600, 1800, 3600)
# Stages range from milliseconds (validation) to the AI timeout (60 s by default).
_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120)
_AI_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 90, 120)

JOBS_SUBMITTED = Counter("exams_jobs_submitted", "Exam submissions accepted (202).")
JOBS_FINISHED = Counter("exams_jobs_finished", "Jobs that reached a terminal state.", ["status"])
CALLBACKS = Counter(
    "exams_callbacks",
    "Completion callback attempts by outcome (delivered, retry, gave_up).",
    ["outcome"],
)
JOB_RETRIES = Counter("exams_job_retries", "Job attempts scheduled again after a transient failure.")
JOB_DURATION = Histogram(
    "exams_job_duration_seconds", "Time from submission to a terminal state.", buckets=_JOB_BUCKETS
)
JOB_STAGE_DURATION = Histogram(
    "exams_job_stage_duration_seconds",
    "Time spent in one pipeline step (one attempt).",
    ["stage"],
    buckets=_STAGE_BUCKETS,
)
AI_REQUEST_DURATION = Histogram("exams_ai_request_duration_seconds", "Duration of one AI request.", buckets=_AI_BUCKETS)
AI_REQUESTS = Counter(
    "exams_ai_requests",
    "AI recommendation requests by outcome (success, timeout, error, disabled).",
    ["outcome"],
)
# The AI guard (jobs.ai_guard): what this process has in flight (summed over the live processes),
# the circuit as last seen by any process, and the jobs completed with the rule-based fallback.
AI_IN_FLIGHT = Gauge(
    "exams_ai_in_flight", "AI requests in flight (summed over processes).", multiprocess_mode="livesum"
)
AI_CIRCUIT_OPEN = Gauge(
    "exams_ai_circuit_open",
    "1 while the AI circuit breaker is open or half-open (as last seen by any process), else 0.",
    multiprocess_mode="mostrecent",
)
# The scheduler's liveness (jobs.maintenance): when its last pass ended without error. "max" over
# the files of every process, dead ones included, so a scheduler that died leaves its last time
# behind and the value ages; processes that never ran a pass report 0 (and an alert fires).
SCHEDULER_LAST_RUN = Gauge(
    "exams_scheduler_last_run_timestamp_seconds",
    "When the scheduler's last pass (re-send lost jobs and callbacks, cleanup when due) ended without error "
    "(Unix time; 0 until one has).",
    multiprocess_mode="max",
)
AI_FALLBACKS = Counter(
    "exams_ai_fallbacks",
    "Jobs completed with rule-based recommendations as the AI could not serve them (circuit_open, retries_exhausted).",
    ["reason"],
)

# Labelled series exist from the start (at 0), so the first failure is an increase Prometheus sees.
for _status in ("completed", "failed", "cancelled"):
    JOBS_FINISHED.labels(status=_status)
for _outcome in ("delivered", "retry", "gave_up"):
    CALLBACKS.labels(outcome=_outcome)
for _outcome in ("success", "timeout", "error", "disabled"):
    AI_REQUESTS.labels(outcome=_outcome)
for _reason in ("circuit_open", "retries_exhausted"):
    AI_FALLBACKS.labels(reason=_reason)
for _stage in ("validating_exam", "processing_answers", "getting_ai_recommendations", "finalizing_results"):
    JOB_STAGE_DURATION.labels(stage=_stage)
