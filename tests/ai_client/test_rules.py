"""The rule-based recommendations used when the AI is disabled."""

from __future__ import annotations

import re

import pytest
from fake_ai_support import make_request

from ai_client import Recommendation, rule_based_recommendations
from ai_client._rules import priority_for

ARABIC = re.compile(r"[\u0600-\u06FF]")


def test_weakest_topics_first_at_most_three() -> None:
    request = make_request(
        [("algebra", 3, 4), ("geometry", 1, 4), ("biology", 2, 2), ("physics", 2, 3), ("history", 0, 1)]
    )

    recommendations = rule_based_recommendations(request)

    assert [(r.topic, r.priority) for r in recommendations] == [
        ("history", "high"),
        ("geometry", "high"),
        ("physics", "medium"),
    ]
    assert "history" in recommendations[0].text
    assert "0 %" in recommendations[0].text
    assert "66.7 %" in recommendations[2].text


def test_ties_keep_exam_order() -> None:
    request = make_request([("b", 1, 2), ("a", 1, 2)])

    assert [r.topic for r in rule_based_recommendations(request)] == ["b", "a"]


@pytest.mark.parametrize(
    ("percentage", "priority"),
    [(0, "high"), (49.9, "high"), (50, "medium"), (74.9, "medium"), (75, "low"), (99.9, "low")],
)
def test_priority_thresholds(percentage: float, priority: str) -> None:
    assert priority_for(percentage) == priority


@pytest.mark.parametrize("topics", [[("algebra", 4, 4), ("geometry", 2, 2)], []])
def test_perfect_result_gets_keep_it_up(topics: list[tuple[str, float, float]]) -> None:
    (recommendation,) = rule_based_recommendations(make_request(topics))

    assert recommendation.topic == "general"
    assert recommendation.priority == "low"
    assert "Keep it up" in recommendation.text


@pytest.mark.parametrize("locale", ["ar", "ar-EG", "AR_sa"])
def test_arabic_texts(locale: str) -> None:
    recommendations = rule_based_recommendations(make_request([("algebra", 1, 4)], locale=locale))

    assert recommendations[0].topic == "algebra"
    assert ARABIC.search(recommendations[0].text)
    assert "algebra" in recommendations[0].text


@pytest.mark.parametrize("locale", ["en", "fr", ""])
def test_other_locales_get_english(locale: str) -> None:
    recommendations = rule_based_recommendations(make_request([("algebra", 1, 4)], locale=locale))

    assert not ARABIC.search(recommendations[0].text)


def test_is_deterministic_and_fits_the_client_limits() -> None:
    request = make_request([("algebra", 1, 4), ("geometry", 3, 4)], locale="ar")

    first, second = rule_based_recommendations(request), rule_based_recommendations(request)

    assert first == second
    assert all(isinstance(r, Recommendation) and 0 < len(r.text) <= 2000 for r in first)
