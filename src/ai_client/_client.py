"""The HTTP client of an OpenAI-compatible chat-completions API that asks for study recommendations."""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

import httpx
import msgspec

from ai_client._errors import AIInvalidAnswerError, AIPermanentError, AITransientError
from ai_client._models import Priority, Recommendation, RecommendationRequest
from ai_client._prompt import build_messages
from core.metrics import AI_REQUEST_DURATION, AI_REQUESTS
from core.retry import is_transient

__all__ = ("AIClient",)

#: Most connections in one of the client's pools (see ``AIClient.__init__``).
SHARD_CONNECTIONS = 50

MAX_RECOMMENDATIONS = 10
MAX_TEXT_LENGTH = 2000
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)
# Some of the provider's own error message helps an operator; all of it could be a page of HTML.
_DETAIL_LIMIT = 200

Outcome = Literal["success", "timeout", "error"]


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message


class _Completion(msgspec.Struct):
    choices: list[_Choice]


class AIClient:
    """Asks an OpenAI-compatible ``/chat/completions`` endpoint for study recommendations.

    One request per :meth:`recommend` call and no retries here: the job pipeline retries the
    whole step on :class:`AITransientError` (honouring ``retry_after``) and fails the job on
    :class:`AIPermanentError`. Every call records ``exams_ai_request_duration_seconds`` and
    ``exams_ai_requests_total{outcome=success|timeout|error}``.

    The client holds one connection pool, bound to the event loop that first uses it: create it
    (``async with AIClient(...)``) inside the loop that calls it.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key or None
        self._model = model
        self._timeout = timeout
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        # One connection per request in flight (HTTP/1.1): ``max_connections`` caps the requests
        # this client has in flight at once; the rest wait for a connection (within ``timeout``).
        # httpcore's pool scans every connection and every waiting request for each request it
        # places, so one pool of 500 costs the event loop a sixth of its time at 500 requests in
        # flight (bench/inflight.py). Pools of at most SHARD_CONNECTIONS each keep the scans short;
        # a request goes to the pool with the fewest requests in flight.
        shards = max(1, math.ceil(max_connections / SHARD_CONNECTIONS))
        per_shard = math.ceil(max_connections / shards)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self._pools = [
            httpx.AsyncClient(timeout=httpx.Timeout(timeout), headers=headers, transport=transport, limits=limits)
            for _ in range(shards)
        ]
        self._in_flight = [0] * shards

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pools."""
        for pool in self._pools:
            await pool.aclose()

    async def recommend(self, request: RecommendationRequest) -> list[Recommendation]:
        """Ask the AI for 1 to 10 recommendations; raises :class:`AIError` subclasses on failure."""
        started = time.perf_counter()
        outcome: Outcome | None = None
        try:
            response = await self._post(request)
            recommendations = self._parse(response)
        except AITransientError as exc:
            outcome = "timeout" if exc.timeout else "error"
            raise
        except AIPermanentError:
            outcome = "error"
            raise
        else:
            outcome = "success"
            return recommendations
        finally:
            # A cancelled call (job stopped, worker shutting down) is neither a success nor an
            # AI error, so it is left out of both metrics.
            if outcome is not None:
                AI_REQUEST_DURATION.observe(time.perf_counter() - started)
                AI_REQUESTS.labels(outcome=outcome).inc()

    async def _post(self, request: RecommendationRequest) -> httpx.Response:
        payload = {
            "model": self._model,
            "messages": build_messages(request),
            "temperature": 0.2,
            "response_format": {"type": "json_object"},
        }
        try:
            # httpx's timeout bounds each phase (connect, each read); this one bounds the whole call.
            shard = self._in_flight.index(min(self._in_flight))
            self._in_flight[shard] += 1
            try:
                async with asyncio.timeout(self._timeout):
                    response = await self._pools[shard].post(self._url, json=payload)
            finally:
                self._in_flight[shard] -= 1
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise AITransientError(f"timeout after {self._timeout:g} s", timeout=True) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise AIPermanentError(f"bad AI API URL: {self._redact(str(exc))}") from exc
        except httpx.TransportError as exc:
            detail = self._redact(str(exc)) or type(exc).__name__
            if not is_transient(exc):  # core.retry: e.g. a protocol error on our side
                raise AIPermanentError(f"AI API request failed: {detail}") from exc
            raise AITransientError(f"cannot reach AI API: {detail}") from exc
        self._raise_for_status(response)
        return response

    def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise AITransientError(f"HTTP {status} from AI API", retry_after=retry_after, status=status)
        if not 200 <= status < 300:
            detail = self._provider_message(response)
            raise AIPermanentError(f"HTTP {status} from AI API" + (f": {detail}" if detail else ""))

    def _provider_message(self, response: httpx.Response) -> str:
        try:
            body: Any = response.json()
            message = body["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return ""
        if not isinstance(message, str):
            return ""
        # Providers quote the key they were sent ("Incorrect API key provided: …").
        return self._redact(" ".join(message.split()))[:_DETAIL_LIMIT]

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _parse(self, response: httpx.Response) -> list[Recommendation]:
        try:
            completion = msgspec.json.decode(response.content, type=_Completion)
        except msgspec.DecodeError as exc:
            raise AIInvalidAnswerError(f"AI API answer is not a chat completion: {exc}") from exc
        if not completion.choices or completion.choices[0].message.content is None:
            raise AIInvalidAnswerError("AI API answer has no message content")
        return parse_recommendations(completion.choices[0].message.content)


def parse_recommendations(content: str) -> list[Recommendation]:
    """Validate the model's message: ``{"recommendations": [...]}``, possibly in a ```json fence."""
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data: Any = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise AIInvalidAnswerError("AI answer is not valid JSON") from exc
    items = data.get("recommendations") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise AIInvalidAnswerError('AI answer has the wrong shape: no "recommendations" list')
    if not 1 <= len(items) <= MAX_RECOMMENDATIONS:
        raise AIInvalidAnswerError(f"AI answer has {len(items)} recommendations, expected 1 to {MAX_RECOMMENDATIONS}")
    return [_recommendation(index, item) for index, item in enumerate(items)]


def _recommendation(index: int, item: Any) -> Recommendation:
    where = f"recommendations[{index}]"
    if not isinstance(item, dict):
        raise AIInvalidAnswerError(f"AI answer has the wrong shape: {where} is not an object")
    topic, text, priority = item.get("topic"), item.get("text"), item.get("priority")
    if not isinstance(topic, str) or not topic.strip():
        raise AIInvalidAnswerError(f"AI answer has the wrong shape: {where}.topic is missing or empty")
    if not isinstance(text, str) or not text.strip():
        raise AIInvalidAnswerError(f"AI answer has the wrong shape: {where}.text is missing or empty")
    if len(text.strip()) > MAX_TEXT_LENGTH:
        raise AIInvalidAnswerError(f"AI answer is too long: {where}.text exceeds {MAX_TEXT_LENGTH} characters")
    return Recommendation(topic=topic.strip(), priority=_priority(priority), text=text.strip())


def _priority(value: object) -> Priority:
    # Models drift ("High", "urgent", missing); a wrong priority is not worth failing a job over.
    normalized = value.strip().lower() if isinstance(value, str) else ""
    if normalized == "high":
        return "high"
    if normalized == "low":
        return "low"
    return "medium"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date), else None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
