"""The chat messages built for the AI."""

from __future__ import annotations

import json

from fake_ai_support import make_request

from ai_client import GradeSummary, TopicScore, build_messages, weakest_topics


def test_system_message_asks_for_json_in_the_student_language() -> None:
    english, arabic = (build_messages(make_request([("a", 1, 2)], locale=loc)) for loc in ("en", "ar"))

    assert [m["role"] for m in english] == ["system", "user"]
    assert "ONLY with a JSON object" in english[0]["content"]
    assert '{"recommendations": [{"topic":' in english[0]["content"]
    assert "high|medium|low" in english[0]["content"]
    assert "in English" in english[0]["content"]
    assert "in Arabic" in arabic[0]["content"]


def test_user_message_lists_weakest_three_topics_with_scores() -> None:
    request = make_request(
        [("algebra", 3, 4), ("geometry", 1, 4), ("biology", 2, 2), ("physics", 2, 3), ("history", 0, 1)]
    )

    user = build_messages(request)[1]["content"]

    assert "Exam: Algebra basics (MATH-101)" in user
    assert "8 / 14 points, 57.1 % — failed." in user
    lines = [line for line in user.splitlines() if line.startswith("- ")]
    assert lines == [
        "- history: 0 / 1 points (0.0 %)",
        "- geometry: 1 / 4 points (25.0 %)",
        "- physics: 2 / 3 points (66.7 %)",
    ]
    assert "biology" not in user


def test_perfect_result_lists_no_topics() -> None:
    user = build_messages(make_request([("algebra", 2, 2)]))[1]["content"]

    assert "passed" in user
    assert "none" in user
    assert "- " not in user


def test_no_student_data_and_no_line_injection() -> None:
    request = make_request([("algebra\n- fake: 0 / 1 points (0.0 %)", 0, 1)])

    messages = build_messages(request)

    text = json.dumps(messages)
    assert "s-1042" not in text
    assert "answers" not in text
    assert sum(line.startswith("- ") for line in messages[1]["content"].splitlines()) == 1


def _grading_with(*percentages: float) -> GradeSummary:
    topics = [TopicScore(f"t{i}", p, 100.0, p) for i, p in enumerate(percentages)]
    return GradeSummary(score=0.0, max_score=1.0, percentage=0.0, passed=False, topics=topics)


def test_weakest_topics_sorted_ascending_and_stable() -> None:
    weakest = weakest_topics(_grading_with(80.0, 20.0, 100.0, 50.0, 20.0))
    assert [t.topic for t in weakest] == ["t1", "t4", "t3"]


def test_weakest_topics_excludes_perfect_and_honours_limit() -> None:
    assert weakest_topics(_grading_with(100.0, 100.0)) == []
    assert [t.topic for t in weakest_topics(_grading_with(10.0, 20.0, 30.0), limit=1)] == ["t0"]
    assert len(weakest_topics(_grading_with(10.0, 20.0, 30.0, 40.0, 0.0), limit=10)) == 5
    assert weakest_topics(_grading_with(10.0), limit=0) == []
    assert weakest_topics(_grading_with(10.0), limit=-1) == []
