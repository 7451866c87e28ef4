"""Study recommendations from an OpenAI-compatible AI API, a rule-based fallback and a fake AI server."""

from __future__ import annotations

from ai_client._client import AIClient
from ai_client._errors import AIError, AIInvalidAnswerError, AIPermanentError, AITransientError
from ai_client._models import GradeSummary, Priority, Recommendation, RecommendationRequest, TopicScore
from ai_client._prompt import build_messages, weakest_topics
from ai_client._rules import rule_based_recommendations
from ai_client.fake_server import create_fake_ai_app, run_fake_ai

__all__ = (
    "AIClient",
    "AIError",
    "AIInvalidAnswerError",
    "AIPermanentError",
    "AITransientError",
    "GradeSummary",
    "Priority",
    "Recommendation",
    "RecommendationRequest",
    "TopicScore",
    "build_messages",
    "create_fake_ai_app",
    "rule_based_recommendations",
    "run_fake_ai",
    "weakest_topics",
)
