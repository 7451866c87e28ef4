"""The fake AI server over a real socket: OpenAI-style answers, input validation, modes and stats."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from fake_ai_support import API_KEY, FakeAI, serve, wait_healthy

from ai_client import create_fake_ai_app

AUTH = {"Authorization": f"Bearer {API_KEY}"}
USER_PROMPT = (
    "Exam: Algebra basics (MATH-101)\n"
    "Result: 1 / 4 points, 25.0 % — failed.\n"
    "Weakest topics, weakest first:\n"
    "- geometry: 0 / 2 points (0.0 %)\n"
    "- algebra: 1 / 2 points (50.0 %)\n"
)


def chat_body(system: str = "Write every text in English.", user: str = USER_PROMPT) -> dict[str, Any]:
    return {
        "model": "any-model",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "temperature": 0.2,
        "response_format": {"type": "json_object"},
    }


def chat(http: httpx.Client, root: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    return http.post(f"{root}/v1/chat/completions", json=chat_body() if body is None else body, headers=AUTH, **kwargs)


def content_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["choices"][0]["message"]["content"])


def test_health_and_models(fake_ai: FakeAI) -> None:
    assert fake_ai.http.get(f"{fake_ai.root}/health").json() == {"status": "ok"}
    models = fake_ai.http.get(f"{fake_ai.root}/v1/models").json()
    assert models["object"] == "list"
    assert models["data"][0]["object"] == "model"


def test_answers_a_chat_completion_for_the_prompted_topics(fake_ai: FakeAI) -> None:
    response = chat(fake_ai.http, fake_ai.root)

    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "any-model"
    assert completion["choices"][0]["finish_reason"] == "stop"
    recommendations = content_of(response)["recommendations"]
    assert [(r["topic"], r["priority"]) for r in recommendations] == [
        ("geometry", "high"),
        ("algebra", "medium"),
    ]


def test_answers_in_arabic_when_asked(fake_ai: FakeAI) -> None:
    response = chat(fake_ai.http, fake_ai.root, chat_body(system="Write every text in Arabic."))

    texts = [r["text"] for r in content_of(response)["recommendations"]]
    assert all(any("\u0600" <= ch <= "\u06ff" for ch in text) for text in texts)


def test_prompt_without_topics_gets_a_general_recommendation(fake_ai: FakeAI) -> None:
    response = chat(fake_ai.http, fake_ai.root, chat_body(user="Weakest topics: none."))

    assert [r["topic"] for r in content_of(response)["recommendations"]] == ["general"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"model": "m"}',
        b'{"model": "m", "messages": []}',
        b'{"model": "m", "messages": [{"content": "hi"}]}',
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}',
    ],
)
def test_invalid_requests_get_openai_style_400(fake_ai: FakeAI, body: bytes) -> None:
    response = fake_ai.http.post(f"{fake_ai.root}/v1/chat/completions", content=body, headers=AUTH)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert fake_ai.stats()["requests"] == 0


def test_missing_key_gets_401(fake_ai: FakeAI) -> None:
    response = fake_ai.http.post(f"{fake_ai.root}/v1/chat/completions", json=chat_body())

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("mode", "status"),
    [("error_500", 500), ("rate_limit_429", 429), ("invalid_json", 200), ("bad_shape", 200)],
)
def test_modes(fake_ai: FakeAI, mode: str, status: int) -> None:
    fake_ai.set_mode(mode)

    response = chat(fake_ai.http, fake_ai.root)

    assert response.status_code == status
    if status == 429:
        assert response.headers["Retry-After"] == "1"
    if mode == "invalid_json":
        with pytest.raises(json.JSONDecodeError):
            content_of(response)
    if mode == "bad_shape":
        assert "recommendations" not in content_of(response)
    assert fake_ai.stats() == {"requests": 1, "by_mode": {mode: 1}}


def test_mode_times_then_back_to_ok_and_reset(fake_ai: FakeAI) -> None:
    fake_ai.set_mode("rate_limit_429", times=2)
    assert fake_ai.http.get(f"{fake_ai.root}/_fake/mode").json()["times"] == 2

    statuses = [chat(fake_ai.http, fake_ai.root).status_code for _ in range(3)]

    assert statuses == [429, 429, 200]
    assert fake_ai.http.get(f"{fake_ai.root}/_fake/mode").json() == {
        "mode": "ok",
        "times": None,
        "latency": 0.0,
        "jitter": 0.0,
        "error_rate": 0.0,
    }
    assert fake_ai.stats() == {"requests": 3, "by_mode": {"rate_limit_429": 2, "ok": 1}}
    fake_ai.reset()
    assert fake_ai.stats() == {"requests": 0, "by_mode": {}}


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "explode"},
        {"mode": "ok", "times": 0},
        {"mode": "ok", "latency": -1},
        {"times": 1},
        {"jitter": -0.5},
        {},
        "nope",
    ],
)
def test_invalid_mode_change_is_400(fake_ai: FakeAI, body: Any) -> None:
    response = fake_ai.http.put(f"{fake_ai.root}/_fake/mode", json=body)

    assert response.status_code == 400
    assert "error" in response.json()


async def test_latency_is_waited_concurrently(fake_ai: FakeAI) -> None:
    fake_ai.set_mode("ok", latency=0.5)
    started = time.perf_counter()

    async with httpx.AsyncClient(headers=AUTH) as client:
        responses = await asyncio.gather(
            *(client.post(f"{fake_ai.base_url}/chat/completions", json=chat_body()) for _ in range(10))
        )

    elapsed = time.perf_counter() - started
    assert all(r.status_code == 200 for r in responses)
    assert 0.5 <= elapsed < 1.5


def test_jitter_adds_a_random_share_to_the_latency(http: httpx.Client) -> None:
    with serve(create_fake_ai_app(latency=0.05, error_rate=0.5, jitter=0.2, seed=7)) as root:
        assert http.get(f"{root}/_fake/mode").json()["jitter"] == 0.2
        started = time.perf_counter()
        responses = [chat(http, root) for _ in range(8)]
        elapsed = time.perf_counter() - started
        waits = [float(r.headers["X-Fake-Latency"]) for r in responses]
        statuses = [r.status_code for r in responses]

        http.post(f"{root}/_fake/reset").raise_for_status()
        replay = [chat(http, root) for _ in range(8)]

        # Only the timing changes: the mode (and its remaining `times`) stays.
        http.put(f"{root}/_fake/mode", json={"mode": "error_500", "times": 5}).raise_for_status()
        changed = http.put(f"{root}/_fake/mode", json={"latency": 0, "jitter": 0}).json()
        still_failing = chat(http, root)

    assert all(0.05 <= wait <= 0.25 for wait in waits), waits
    assert len(set(waits)) == len(waits)  # drawn afresh for every answer
    assert elapsed >= sum(waits)
    # Seeded: a reset replays the same waits, and jitter leaves the seeded errors unchanged.
    assert [float(r.headers["X-Fake-Latency"]) for r in replay] == waits
    assert [r.status_code for r in replay] == statuses
    assert set(statuses) == {200, 500}
    assert changed == {"mode": "error_500", "times": 5, "latency": 0.0, "jitter": 0.0, "error_rate": 0.5}
    assert still_failing.status_code == 500
    assert still_failing.headers["X-Fake-Latency"] == "0.000000"


def test_hang_stops_when_the_client_leaves(fake_ai: FakeAI) -> None:
    fake_ai.set_mode("hang")

    with pytest.raises(httpx.ReadTimeout):
        chat(fake_ai.http, fake_ai.root, timeout=0.3)

    fake_ai.set_mode("ok")
    started = time.perf_counter()
    assert chat(fake_ai.http, fake_ai.root).status_code == 200
    assert time.perf_counter() - started < 0.5
    assert fake_ai.stats()["by_mode"] == {"hang": 1, "ok": 1}


def test_start_mode_and_error_rate(http: httpx.Client) -> None:
    with serve(create_fake_ai_app(latency=0, error_rate=0, mode="error_500")) as root:
        assert chat(http, root).status_code == 500
        http.put(f"{root}/_fake/mode", json={"mode": "ok"}).raise_for_status()
        assert chat(http, root).status_code == 200
        http.post(f"{root}/_fake/reset").raise_for_status()
        assert http.get(f"{root}/_fake/mode").json()["mode"] == "error_500"

    with serve(create_fake_ai_app(latency=0, error_rate=1, seed=3)) as root:
        assert {chat(http, root).status_code for _ in range(5)} == {500}
        assert http.get(f"{root}/_fake/stats").json() == {"requests": 5, "by_mode": {"error_500": 5}}


def test_error_rate_is_seeded_and_reset_replays_it(http: httpx.Client) -> None:
    with serve(create_fake_ai_app(latency=0, error_rate=0.5, seed=42)) as root:
        first = [chat(http, root).status_code for _ in range(20)]
        http.post(f"{root}/_fake/reset").raise_for_status()
        second = [chat(http, root).status_code for _ in range(20)]

    assert first == second
    assert set(first) == {200, 500}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latency": -1, "error_rate": 0},
        {"latency": 0, "error_rate": 1.5},
        {"latency": 0, "error_rate": 0, "mode": "nope"},
        {"latency": 0, "error_rate": 0, "jitter": -1},
    ],
)
def test_bad_settings_are_refused(kwargs: Any) -> None:
    with pytest.raises(ValueError, match=r"latency|error rate|mode|jitter"):
        create_fake_ai_app(**kwargs)


def test_run_fake_ai_serves_and_logs_its_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = (
        "from ai_client.fake_server import run_fake_ai; "
        f"run_fake_ai(host='127.0.0.1', port={port}, latency=0, error_rate=0)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat_body())
        assert response.status_code == 200
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)

    assert f"http://127.0.0.1:{port}/v1" in output
    assert output.count("fake AI listening") == 1
