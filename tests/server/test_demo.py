"""``exams demo``: one process, and its flags reach every part of it (the embedded worker too)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from support import MATH_ANSWERS, Process, free_port, sqlite_url


def test_demo_ai_latency_flag_reaches_the_embedded_worker(tmp_path: Path) -> None:
    """``FAKE_AI_LATENCY=30 exams demo --ai-latency 1``: the flag wins, so a job takes about a second.

    Before the composition root, the in-process worker built its AI client from the environment
    and the job waited the full 30 s.
    """
    port = free_port()
    env = {
        "DATABASE_URL": sqlite_url(tmp_path),
        "FAKE_AI_LATENCY": "30",
        "AI_API_BASE_URL": "",
        "LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": "",
    }
    demo = Process(
        ["demo", "--port", str(port), "--ai-latency", "1"],
        env,
        tmp_path / "demo.log",
        f"http://127.0.0.1:{port}/health",
    ).start()
    try:
        base = f"http://127.0.0.1:{port}"
        body = {"exam_code": "MATH-101", "student_id": "s-1", "answers": MATH_ANSWERS}
        response = httpx.post(f"{base}/api/exam-results/process", json=body, timeout=10)
        assert response.status_code == 202, response.text
        status_url = base + response.headers["Location"]
        # Well under the 30 s the environment asks for: only the flag's 1 s latency can finish it.
        deadline = time.monotonic() + 20
        doc = httpx.get(status_url, timeout=10).json()
        while doc["status"] not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
            doc = httpx.get(status_url, timeout=10).json()
        assert doc["status"] == "completed", doc
        assert doc["result"]["recommendations_source"] == "ai"
        assert "built-in fake AI (1 s latency)" in demo.log()
    finally:
        demo.stop()
