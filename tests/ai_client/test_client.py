"""AIClient against the real fake AI server over a socket, plus answer parsing edge cases."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from fake_ai_support import API_KEY, FakeAI, MakeRequest
from prometheus_client import REGISTRY

from ai_client import (
    AIClient,
    AIError,
    AIPermanentError,
    AITransientError,
    Recommendation,
    RecommendationRequest,
)
from ai_client._client import parse_retry_after

ARABIC = re.compile(r"[\u0600-\u06FF]")
WEAK = [("algebra", 3, 4), ("geometry", 1, 4), ("biology", 2, 2), ("physics", 1, 2), ("history", 0, 1)]


def outcome_count(outcome: str) -> float:
    return REGISTRY.get_sample_value("exams_ai_requests_total", {"outcome": outcome}) or 0.0


def duration_count() -> float:
    return REGISTRY.get_sample_value("exams_ai_request_duration_seconds_count") or 0.0


@pytest.fixture
async def client(fake_ai: FakeAI) -> AsyncIterator[AIClient]:
    async with AIClient(base_url=fake_ai.base_url, api_key=API_KEY, model="test-model", timeout=5) as ai:
        yield ai


async def test_success_returns_weakest_topics_first(
    client: AIClient, fake_ai: FakeAI, make_request: MakeRequest
) -> None:
    before_success, before_duration = outcome_count("success"), duration_count()

    recommendations = await client.recommend(make_request(WEAK))

    assert [r.topic for r in recommendations] == ["history", "geometry", "physics"]
    assert [r.priority for r in recommendations] == ["high", "high", "medium"]
    assert all(r.text and not ARABIC.search(r.text) for r in recommendations)
    assert outcome_count("success") == before_success + 1
    assert duration_count() == before_duration + 1
    assert fake_ai.stats() == {"requests": 1, "by_mode": {"ok": 1}}


async def test_arabic_locale_gets_arabic_texts(client: AIClient, make_request: MakeRequest) -> None:
    recommendations = await client.recommend(make_request(WEAK, locale="ar"))

    assert len(recommendations) == 3
    assert all(ARABIC.search(r.text) for r in recommendations)
    assert recommendations[0].topic == "history"


async def test_perfect_grading_gets_one_general_recommendation(client: AIClient, make_request: MakeRequest) -> None:
    recommendations = await client.recommend(make_request([("algebra", 4, 4)]))

    assert recommendations == [Recommendation("general", "low", recommendations[0].text)]


async def test_http_500_is_transient(client: AIClient, fake_ai: FakeAI, make_request: MakeRequest) -> None:
    fake_ai.set_mode("error_500")
    before = outcome_count("error")

    with pytest.raises(AITransientError) as caught:
        await client.recommend(make_request(WEAK))

    assert caught.value.reason == "HTTP 500 from AI API"
    assert caught.value.retry_after is None
    assert not caught.value.timeout
    assert outcome_count("error") == before + 1


async def test_http_429_is_transient_with_retry_after(
    client: AIClient, fake_ai: FakeAI, make_request: MakeRequest
) -> None:
    fake_ai.set_mode("rate_limit_429")

    with pytest.raises(AITransientError) as caught:
        await client.recommend(make_request(WEAK))

    assert caught.value.retry_after == 1
    assert str(caught.value) == "HTTP 429 from AI API"


@pytest.mark.parametrize(("mode", "latency"), [("hang", None), ("ok", 3.0)])
async def test_no_answer_in_time_is_a_transient_timeout(
    fake_ai: FakeAI, make_request: MakeRequest, mode: str, latency: float | None
) -> None:
    fake_ai.set_mode(mode, latency=latency)
    before = outcome_count("timeout")
    started = time.perf_counter()

    async with AIClient(base_url=fake_ai.base_url, api_key=API_KEY, model="m", timeout=0.5) as ai:
        with pytest.raises(AITransientError) as caught:
            await ai.recommend(make_request(WEAK))

    assert time.perf_counter() - started < 1.5
    assert caught.value.timeout
    assert str(caught.value) == "timeout after 0.5 s"
    assert outcome_count("timeout") == before + 1


@pytest.mark.parametrize(
    ("mode", "message"),
    [("invalid_json", "AI answer is not valid JSON"), ("bad_shape", 'no "recommendations" list')],
)
async def test_unusable_answer_is_permanent(
    client: AIClient, fake_ai: FakeAI, make_request: MakeRequest, mode: str, message: str
) -> None:
    fake_ai.set_mode(mode)
    before = outcome_count("error")

    with pytest.raises(AIPermanentError, match=re.escape(message)):
        await client.recommend(make_request(WEAK))

    assert outcome_count("error") == before + 1


async def test_connection_refused_is_transient(closed_port_url: str, make_request: MakeRequest) -> None:
    async with AIClient(base_url=closed_port_url, api_key=API_KEY, model="m", timeout=2) as ai:
        with pytest.raises(AITransientError, match=r"^cannot reach AI API") as caught:
            await ai.recommend(make_request(WEAK))

    assert API_KEY not in str(caught.value)


async def test_times_applies_mode_then_returns_to_ok(
    client: AIClient, fake_ai: FakeAI, make_request: MakeRequest
) -> None:
    fake_ai.set_mode("error_500", times=2)

    for _ in range(2):
        with pytest.raises(AITransientError):
            await client.recommend(make_request(WEAK))
    assert await client.recommend(make_request(WEAK))

    assert fake_ai.stats() == {"requests": 3, "by_mode": {"error_500": 2, "ok": 1}}


async def test_sends_openai_request_with_bearer_key(fake_ai: FakeAI, make_request: MakeRequest) -> None:
    sent: list[httpx.Request] = []

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return await super().handle_async_request(request)

    async with AIClient(
        base_url=fake_ai.base_url + "/", api_key=API_KEY, model="gpt-x", timeout=5, transport=Recording()
    ) as ai:
        await ai.recommend(make_request(WEAK))

    (request,) = sent
    assert request.method == "POST"
    assert str(request.url) == f"{fake_ai.base_url}/chat/completions"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    body = json.loads(request.content)
    assert body["model"] == "gpt-x"
    assert body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "s-1042" not in request.content.decode()


@pytest.mark.parametrize("key", ["sk-wrong-key-987654321", None])
async def test_rejected_key_is_permanent_and_never_echoed(
    fake_ai: FakeAI, make_request: MakeRequest, key: str | None
) -> None:
    async with AIClient(base_url=fake_ai.base_url, api_key=key, model="m", timeout=5) as ai:
        with pytest.raises(AIPermanentError, match=r"^HTTP 401 from AI API: Incorrect API key") as caught:
            await ai.recommend(make_request(WEAK))

    if key is not None:
        assert key not in str(caught.value)
        assert key not in repr(caught.value)
    assert fake_ai.stats()["requests"] == 0


# Answers the fake does not produce, served by a mock transport.


def completion(content: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> AIClient:
    return AIClient(
        base_url="http://ai.test/v1",
        api_key=API_KEY,
        model="m",
        timeout=5,
        transport=httpx.MockTransport(handler),
    )


async def recommend_with(response: httpx.Response, request: RecommendationRequest) -> list[Recommendation]:
    async with mock_client(lambda _: response) as ai:
        return await ai.recommend(request)


async def test_fenced_content_and_odd_priorities_are_tolerated(make_request: MakeRequest) -> None:
    items = [
        {"topic": "algebra", "priority": "High", "text": " Practise factoring. "},
        {"topic": "geometry", "priority": "urgent", "text": "Draw the figures."},
        {"topic": "biology", "text": "Revise cells.", "extra": 1},
    ]
    content = "```json\n" + json.dumps({"recommendations": items}) + "\n```"

    result = await recommend_with(httpx.Response(200, json=completion(content)), make_request(WEAK))

    assert result == [
        Recommendation("algebra", "high", "Practise factoring."),
        Recommendation("geometry", "medium", "Draw the figures."),
        Recommendation("biology", "medium", "Revise cells."),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"recommendations": []}', "0 recommendations"),
        (json.dumps({"recommendations": [{"topic": "a", "text": "b"}] * 11}), "11 recommendations"),
        ('{"recommendations": [{"topic": "a", "text": "  "}]}', "recommendations[0].text"),
        ('{"recommendations": [{"topic": "a"}]}', "recommendations[0].text"),
        ('{"recommendations": [{"text": "x"}]}', "recommendations[0].topic"),
        ('{"recommendations": ["x"]}', "recommendations[0] is not an object"),
        (json.dumps({"recommendations": [{"topic": "a", "text": "x" * 2001}]}), "exceeds 2000"),
        ('[{"topic": "a", "text": "b"}]', "wrong shape"),
    ],
)
async def test_invalid_recommendations_are_permanent(make_request: MakeRequest, content: str, message: str) -> None:
    with pytest.raises(AIPermanentError, match=re.escape(message)):
        await recommend_with(httpx.Response(200, json=completion(content)), make_request(WEAK))


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>gateway</html>"),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, json={"choices": [{"message": {"content": None}}]}),
        httpx.Response(404, json={"error": {"message": f"model not found for key {API_KEY}"}}),
        httpx.Response(400, text="bad"),
    ],
)
async def test_unusable_responses_are_permanent(make_request: MakeRequest, response: httpx.Response) -> None:
    with pytest.raises(AIPermanentError) as caught:
        await recommend_with(response, make_request(WEAK))

    assert API_KEY not in str(caught.value)


async def test_503_with_http_date_retry_after(make_request: MakeRequest) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)

    with pytest.raises(AITransientError) as caught:
        await recommend_with(httpx.Response(503, headers={"Retry-After": when}), make_request(WEAK))

    assert caught.value.retry_after is not None
    assert 25 < caught.value.retry_after <= 30


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("1", 1.0), (" 2.5 ", 2.5), ("-3", 0.0), ("soon", None), ("inf", None)],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_past_date_is_zero() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_error_tree() -> None:
    assert issubclass(AITransientError, AIError)
    assert issubclass(AIPermanentError, AIError)
    assert not issubclass(AIPermanentError, AITransientError)
