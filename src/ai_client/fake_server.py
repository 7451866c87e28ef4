"""An OpenAI-compatible stand-in for the AI API (``exams fake-ai``): slow on purpose, scriptable for tests.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``, and the test controls
``GET|PUT /_fake/mode``, ``GET /_fake/stats``, ``GET /_fake/requests`` (concurrency and arrival
times), ``POST /_fake/reset`` (see docs/ai-integration.md).
Each answer waits ``latency`` plus a random ``0..jitter`` seconds, and says how long in the
``X-Fake-Latency`` header.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import msgspec
import structlog
import uvicorn
from litestar import Litestar, Request, Response, get, post, put
from litestar.types import ASGIApp

from ai_client._models import Priority
from ai_client._rules import GENERAL_TOPIC, priority_for

__all__ = ("FAKE_MODEL", "MODES", "FakeMode", "create_fake_ai_app", "run_fake_ai")

FakeMode = Literal["ok", "error_500", "rate_limit_429", "hang", "invalid_json", "bad_shape"]
MODES: tuple[FakeMode, ...] = get_args(FakeMode)
FAKE_MODEL = "fake-exam-coach"
#: How long ``hang`` waits: far past any sane client timeout (it stops early when the client leaves).
HANG_SECONDS = 3600.0

_log = structlog.get_logger(__name__)

# The topic lines written by ai_client._prompt; a real model reads them, this fake parses them.
_TOPIC_LINE = re.compile(
    r"^- (?P<topic>.+): (?P<score>[\d.]+) / (?P<max>[\d.]+) points \((?P<percentage>[\d.]+) %\)$",
    re.MULTILINE,
)

_TEXTS: dict[str, dict[Priority | str, str]] = {
    "en": {
        "high": (
            "{topic} needs the most attention ({percentage} %). Re-read your notes on it, redo the "
            "worked examples step by step, then try ten practice questions without looking at the answers."
        ),
        "medium": (
            "Your {topic} is getting there ({percentage} %). Pick the question types you missed and "
            "practise them for twenty minutes a day this week."
        ),
        "low": (
            "{topic} is nearly mastered ({percentage} %). A short review of the one or two slips you "
            "made will lock it in."
        ),
        "general": (
            "A flawless result. Stretch yourself with harder problems and explain the ideas to a "
            "classmate to keep them fresh."
        ),
    },
    "ar": {
        "high": (
            "موضوع «{topic}» يحتاج إلى أكبر قدر من الاهتمام ({percentage} ٪). أعد قراءة ملاحظاتك عنه، "
            "وحلّ الأمثلة المحلولة خطوة بخطوة، ثم جرّب عشرة أسئلة تدريبية دون النظر إلى الإجابات."
        ),
        "medium": (
            "مستواك في «{topic}» يتحسّن ({percentage} ٪). اختر أنواع الأسئلة التي أخطأت فيها وتدرّب "
            "عليها عشرين دقيقة يومياً هذا الأسبوع."
        ),
        "low": (
            "أوشكت على إتقان «{topic}» ({percentage} ٪). مراجعة قصيرة للخطأ أو الخطأين اللذين وقعت فيهما ستثبّت فهمك."
        ),
        "general": ("نتيجة كاملة! تحدَّ نفسك بمسائل أصعب واشرح الأفكار لزميل لتبقى حاضرة في ذهنك."),
    },
}


class _ChatMessage(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(str(part.get("text", "")) for part in self.content)
        return self.content or ""


class _ChatRequest(msgspec.Struct):
    model: str
    messages: list[_ChatMessage]
    temperature: float | None = None


class _ModeChange(msgspec.Struct, forbid_unknown_fields=True):
    #: ``None`` keeps the current mode (and its remaining ``times``): only the timing changes.
    mode: FakeMode | None = None
    times: int | None = None
    latency: float | None = None
    jitter: float | None = None
    #: Seconds the ``Retry-After`` of a ``rate_limit_429`` answer says (default 1).
    retry_after: float | None = None


#: How many chat completions ``GET /_fake/requests`` remembers (the most recent).
REQUEST_LOG_SIZE = 10_000
DEFAULT_RETRY_AFTER = 1.0


@dataclass
class _FakeState:
    """Everything the fake remembers; only its own event loop touches it."""

    start_mode: FakeMode
    start_latency: float
    error_rate: float
    seed: int | None
    start_jitter: float = 0.0
    mode: FakeMode = "ok"
    times: int | None = None
    latency: float = 0.0
    jitter: float = 0.0
    requests: int = 0
    retry_after: float = DEFAULT_RETRY_AFTER
    #: Chat completions being answered right now, and the most ever at once since the reset.
    in_flight: int = 0
    max_in_flight: int = 0
    #: ``(time.time() when it arrived, mode it was answered in)`` of the latest requests.
    log: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))
    by_mode: Counter[str] = field(default_factory=Counter)
    rng: random.Random = field(default_factory=random.Random)
    #: Its own generator, so jitter leaves the seeded sequence of errors unchanged.
    jitter_rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.mode, self.times, self.latency = self.start_mode, None, self.start_latency
        self.jitter = self.start_jitter
        self.requests = 0
        self.retry_after = DEFAULT_RETRY_AFTER
        self.max_in_flight = self.in_flight
        self.log.clear()
        self.by_mode.clear()
        self.rng.seed(self.seed)
        self.jitter_rng.seed(self.seed)

    def change(self, change: _ModeChange) -> None:
        if change.mode is not None:
            self.mode = change.mode
            self.times = None if change.mode == "ok" else change.times
        if change.latency is not None:
            self.latency = change.latency
        if change.jitter is not None:
            self.jitter = change.jitter
        if change.retry_after is not None:
            self.retry_after = change.retry_after

    def next_wait(self) -> float:
        """Seconds the next answer takes: the latency plus a random share of the jitter."""
        if not self.jitter:
            return self.latency
        return self.latency + self.jitter_rng.uniform(0.0, self.jitter)

    def next_mode(self) -> FakeMode:
        """Count one paid request and decide how to answer it."""
        self.requests += 1
        mode = self.mode
        if mode != "ok" and self.times is not None:
            self.times -= 1
            if self.times <= 0:
                self.mode, self.times = "ok", None
        elif mode == "ok" and self.error_rate and self.rng.random() < self.error_rate:
            mode = "error_500"
        self.by_mode[mode] += 1
        self.log.append((time.time(), mode))
        return mode

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "times": self.times,
            "latency": self.latency,
            "jitter": self.jitter,
            "error_rate": self.error_rate,
        }


def create_fake_ai_app(
    *,
    latency: float,
    error_rate: float,
    mode: str = "ok",
    seed: int | None = None,
    api_key: str | None = None,
    jitter: float = 0.0,
) -> ASGIApp:
    """A fresh fake AI server: ``latency`` seconds per answer, ``error_rate`` of answers a 500.

    ``jitter`` adds a random ``0..jitter`` seconds to each answer (uniform; seeded by ``seed``),
    so load tests see answers finish out of order.

    With ``api_key`` set, chat completions without ``Authorization: Bearer <api_key>`` get a 401
    that quotes the key sent, as careless providers do (the client must not repeat it).
    """
    start_mode = _check_settings(latency=latency, error_rate=error_rate, mode=mode, jitter=jitter)
    state = _FakeState(
        start_mode=start_mode, start_latency=latency, error_rate=error_rate, seed=seed, start_jitter=jitter
    )

    @post("/v1/chat/completions", operation_id="fakeChatCompletion")
    async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
        """Answer a chat completion with recommendations for the topics named in the prompt."""
        if api_key is not None:
            sent = request.headers.get("authorization", "").removeprefix("Bearer ")
            if sent != api_key:
                message = f"Incorrect API key provided: {sent or '(none)'}."
                return _error(401, message, "invalid_request_error", code="invalid_api_key")
        try:
            chat = msgspec.json.decode(await request.body(), type=_ChatRequest)
        except msgspec.DecodeError as exc:
            return _error(400, f"Invalid request body: {exc}", "invalid_request_error")
        if not chat.messages:
            return _error(400, "'messages' must not be empty.", "invalid_request_error", param="messages")
        if chat.temperature is not None and not 0 <= chat.temperature <= 2:
            return _error(400, "'temperature' must be between 0 and 2.", "invalid_request_error")

        answer = state.next_mode()
        if answer == "rate_limit_429":
            # A rate limiter answers at once; everything else pays the (simulated) model latency.
            return _error(
                429,
                f"Rate limit reached, retry after {state.retry_after:g} s.",
                "requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": f"{state.retry_after:g}"},
            )
        wait = HANG_SECONDS if answer == "hang" else state.next_wait()
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await _sleep_unless_disconnected(request, wait)
        finally:
            state.in_flight -= 1
        timing = {"X-Fake-Latency": f"{wait:.6f}"}
        if answer in ("error_500", "hang"):
            message = "The server had an error while processing your request."
            return _error(500, message, "server_error", headers=timing)
        return Response(_completion(chat, _content(answer, chat)), status_code=200, headers=timing)

    @get("/v1/models", operation_id="fakeListModels")
    async def list_models() -> dict[str, Any]:
        """The one model this fake offers (any model name is accepted anyway)."""
        return {
            "object": "list",
            "data": [{"id": FAKE_MODEL, "object": "model", "created": 0, "owned_by": "exams"}],
        }

    @get("/health", operation_id="fakeHealth")
    async def health() -> dict[str, str]:
        """The fake is up."""
        return {"status": "ok"}

    @get("/_fake/mode", operation_id="fakeGetMode")
    async def get_mode() -> dict[str, Any]:
        """The current answer mode, remaining ``times`` and latency."""
        return state.describe()

    @put("/_fake/mode", operation_id="fakeSetMode")
    async def set_mode(request: Request[Any, Any, Any]) -> Response[Any]:
        """Switch the answer mode, for the next ``times`` requests or until changed; or only the timing."""
        try:
            change = msgspec.json.decode(await request.body(), type=_ModeChange)
        except msgspec.DecodeError as exc:
            return _error(400, f"Invalid mode change: {exc}", "invalid_request_error")
        if change.times is not None and change.times < 1:
            return _error(400, "'times' must be at least 1 (or null).", "invalid_request_error", param="times")
        timing_only = change.latency is not None or change.jitter is not None or change.retry_after is not None
        if change.mode is None and (change.times is not None or not timing_only):
            message = "'mode' is required, unless only 'latency', 'jitter' or 'retry_after' change."
            return _error(400, message, "invalid_request_error", param="mode")
        if change.latency is not None and change.latency < 0:
            return _error(400, "'latency' must not be negative.", "invalid_request_error", param="latency")
        if change.jitter is not None and change.jitter < 0:
            return _error(400, "'jitter' must not be negative.", "invalid_request_error", param="jitter")
        if change.retry_after is not None and change.retry_after < 0:
            message = "'retry_after' must not be negative."
            return _error(400, message, "invalid_request_error", param="retry_after")
        state.change(change)
        return Response(state.describe(), status_code=200)

    @get("/_fake/stats", operation_id="fakeStats")
    async def stats() -> dict[str, Any]:
        """Chat completions answered since start or reset, by the mode they were answered in."""
        return {"requests": state.requests, "by_mode": dict(state.by_mode)}

    @get("/_fake/requests", operation_id="fakeRequests")
    async def requests_log() -> dict[str, Any]:
        """Since start or reset: how many requests it holds now and held at most at once, and the
        latest requests (when each arrived, Unix time, and how it was answered)."""
        return {
            "in_flight": state.in_flight,
            "max_in_flight": state.max_in_flight,
            "requests": [{"at": at, "mode": mode} for at, mode in state.log],
        }

    @post("/_fake/reset", operation_id="fakeReset", status_code=200)
    async def reset() -> dict[str, Any]:
        """Forget the stats and go back to the start mode, latency and jitter."""
        state.reset()
        return state.describe()

    return Litestar(
        route_handlers=[chat_completions, list_models, health, get_mode, set_mode, stats, requests_log, reset],
        openapi_config=None,
        # The host process owns logging (structlog); Litestar's default config would replace it.
        logging_config=None,
    )


def run_fake_ai(
    *, host: str, port: int, latency: float, error_rate: float, mode: str = "ok", jitter: float = 0.0
) -> None:
    """Serve the fake AI with uvicorn until interrupted."""
    app = create_fake_ai_app(latency=latency, error_rate=error_rate, mode=mode, jitter=jitter)
    _log.info(
        "fake AI listening",
        url=f"http://{host}:{port}/v1",
        latency=latency,
        jitter=jitter,
        error_rate=error_rate,
        mode=mode,
    )
    # Requests parked in `hang` or a long latency must not hold shutdown hostage.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=2)


def _check_settings(*, latency: float, error_rate: float, mode: str, jitter: float = 0.0) -> FakeMode:
    if latency < 0:
        raise ValueError(f"latency must not be negative, got {latency}")
    if jitter < 0:
        raise ValueError(f"jitter must not be negative, got {jitter}")
    if not 0 <= error_rate <= 1:
        raise ValueError(f"error rate must be between 0 and 1, got {error_rate}")
    for known in MODES:
        if mode == known:
            return known
    raise ValueError(f"unknown mode {mode!r}, expected one of {', '.join(MODES)}")


async def _sleep_unless_disconnected(request: Request[Any, Any, Any], seconds: float) -> None:
    # Many clients give up long before a 35 s latency or a hang ends; stop waiting when they do.
    if seconds <= 0:
        return
    sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
    watcher = asyncio.ensure_future(_disconnected(request))
    _, pending = await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _disconnected(request: Request[Any, Any, Any]) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _content(mode: FakeMode, chat: _ChatRequest) -> str:
    if mode == "invalid_json":
        return "Sure! Here are my recommendations: practise more, and review your notes."
    if mode == "bad_shape":
        return '{"advice": "practise more", "score": 42}'
    system = "\n".join(message.text() for message in chat.messages if message.role in ("system", "developer"))
    user = "\n".join(message.text() for message in chat.messages if message.role == "user")
    texts = _TEXTS["ar" if "Arabic" in system else "en"]
    recommendations = []
    for match in _TOPIC_LINE.finditer(user):
        percentage = float(match["percentage"])
        priority = priority_for(percentage)
        text = texts[priority].format(topic=match["topic"], percentage=f"{percentage:g}")
        recommendations.append({"topic": match["topic"], "priority": priority, "text": text})
    if not recommendations:
        recommendations.append({"topic": GENERAL_TOPIC, "priority": "low", "text": texts["general"]})
    return msgspec.json.encode({"recommendations": recommendations}).decode()


def _completion(chat: _ChatRequest, content: str) -> dict[str, Any]:
    prompt_tokens = sum(len(message.text().split()) for message in chat.messages)
    completion_tokens = len(content.split())
    return {
        "id": f"chatcmpl-fake-{time.time_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error(
    status: int,
    message: str,
    kind: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(body, status_code=status, headers=headers)
