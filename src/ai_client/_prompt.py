"""The chat messages sent to the AI: what to answer, in which language, about which topics.

The prompt names the exam, the overall result and the weakest topics only: never a student id or answers.
"""

from __future__ import annotations

import re
from typing import Literal

from ai_client._models import GradeSummary, RecommendationRequest, TopicScore

__all__ = ("MAX_TOPICS", "Language", "build_messages", "language_of", "weakest_topics")

Language = Literal["en", "ar"]

#: Recommendations cover at most this many topics, weakest first.
MAX_TOPICS = 3

_LANGUAGE_NAMES: dict[Language, str] = {"en": "English", "ar": "Arabic"}

_SYSTEM = (
    "You are a study coach. A student has just taken an exam; you receive their result and "
    "their weakest topics. Answer ONLY with a JSON object of exactly this form, with no prose "
    "and no Markdown around it:\n"
    '{{"recommendations": [{{"topic": "<topic name as given>", "priority": "high|medium|low", '
    '"text": "<one or two sentences of concrete advice>"}}]}}\n'
    "Give one recommendation per topic listed, in the order listed (weakest first); priority "
    "is high below 50 %, medium below 75 %, low otherwise. If no topic is listed, give a single "
    'recommendation with topic "general" on how to keep improving. '
    "Write every text in {language}, the student's language; keep topic names unchanged."
)


def language_of(locale: str) -> Language:
    """``ar`` for any Arabic locale (``ar``, ``ar-EG``, ``ar_SA``), else ``en``."""
    return "ar" if re.split(r"[-_]", locale.strip().lower(), maxsplit=1)[0] == "ar" else "en"


def weakest_topics(grading: GradeSummary, limit: int = MAX_TOPICS) -> list[TopicScore]:
    """Topics under 100 %, weakest first (ties keep exam order), at most ``limit``."""
    imperfect = [topic for topic in grading.topics if topic.percentage < 100]
    return sorted(imperfect, key=lambda topic: topic.percentage)[: max(limit, 0)]


def build_messages(request: RecommendationRequest) -> list[dict[str, str]]:
    """The ``messages`` of an OpenAI-style chat completion for ``request``."""
    system = _SYSTEM.format(language=_LANGUAGE_NAMES[language_of(request.locale)])
    return [{"role": "system", "content": system}, {"role": "user", "content": _user_message(request)}]


def _user_message(request: RecommendationRequest) -> str:
    grading = request.grading
    verdict = "passed" if grading.passed else "failed"
    lines = [
        f"Exam: {_one_line(request.exam_title)} ({_one_line(request.exam_code)})",
        f"Result: {_number(grading.score)} / {_number(grading.max_score)} points, "
        f"{grading.percentage:.1f} % — {verdict}.",
    ]
    weakest = weakest_topics(grading)
    if weakest:
        lines.append("Weakest topics, weakest first:")
        lines.extend(
            f"- {_one_line(topic.topic)}: {_number(topic.score)} / {_number(topic.max_score)} points "
            f"({topic.percentage:.1f} %)"
            for topic in weakest
        )
        lines.append("Write one recommendation per topic listed above.")
    else:
        lines.append("Weakest topics: none, every topic was answered perfectly.")
        lines.append("Write one recommendation on how to keep improving.")
    return "\n".join(lines)


def _one_line(text: str) -> str:
    # A newline inside a title or topic would let catalog text pose as a line of the prompt.
    return " ".join(text.split())


def _number(value: float) -> str:
    return f"{value:g}"
