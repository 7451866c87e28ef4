"""Deterministic recommendations used instead of the AI when ``AI_API_ENABLED=false``.

The caller records ``exams_ai_requests_total{outcome="disabled"}`` and stores
``recommendations_source: "rule_based"``; this module only computes the list.
"""

from __future__ import annotations

from ai_client._models import Priority, Recommendation, RecommendationRequest
from ai_client._prompt import Language, language_of, weakest_topics

__all__ = ("GENERAL_TOPIC", "priority_for", "rule_based_recommendations")

#: Topic of the single recommendation given when every topic is perfect.
GENERAL_TOPIC = "general"

# Content, not UI: these are the recommendations themselves, so they live with the rules
# rather than in the i18n catalogs.
_TEXTS: dict[Language, dict[Priority | str, str]] = {
    "en": {
        "high": (
            "Revisit {topic} from the basics: you scored {percentage} %. Work through the core "
            "ideas again and practise extra exercises before moving on."
        ),
        "medium": (
            "Strengthen {topic} ({percentage} %): go over the questions you missed and practise "
            "similar problems until they feel routine."
        ),
        "low": (
            "You are close to mastering {topic} ({percentage} %): review the few mistakes left to "
            "make your understanding solid."
        ),
        "keep_it_up": (
            "Excellent work: every topic is perfect. Keep it up with regular review and try more challenging problems."
        ),
    },
    "ar": {
        "high": (
            "راجع موضوع «{topic}» من الأساسيات: حصلت على {percentage} ٪. ادرس الأفكار الرئيسية "
            "من جديد وحلّ تمارين إضافية قبل الانتقال إلى غيره."
        ),
        "medium": (
            "قوِّ فهمك لموضوع «{topic}» ({percentage} ٪): راجع الأسئلة التي أخطأت فيها وتدرّب "
            "على مسائل مشابهة حتى تصبح سهلة عليك."
        ),
        "low": ("أنت قريب من إتقان موضوع «{topic}» ({percentage} ٪): راجع الأخطاء القليلة المتبقية لتثبيت فهمك."),
        "keep_it_up": ("عمل ممتاز: أتقنت جميع الموضوعات. حافظ على مستواك بالمراجعة المنتظمة وجرّب مسائل أكثر تحدّياً."),
    },
}


def rule_based_recommendations(request: RecommendationRequest) -> list[Recommendation]:
    """One recommendation per topic under 100 % (weakest first, at most 3), or one "keep it up"."""
    texts = _TEXTS[language_of(request.locale)]
    weakest = weakest_topics(request.grading)
    if not weakest:
        return [Recommendation(topic=GENERAL_TOPIC, priority="low", text=texts["keep_it_up"])]
    recommendations = []
    for topic in weakest:
        priority = priority_for(topic.percentage)
        text = texts[priority].format(topic=topic.topic, percentage=f"{round(topic.percentage, 1):g}")
        recommendations.append(Recommendation(topic=topic.topic, priority=priority, text=text))
    return recommendations


def priority_for(percentage: float) -> Priority:
    """``high`` under 50 %, ``medium`` under 75 %, ``low`` otherwise."""
    if percentage < 50:
        return "high"
    if percentage < 75:
        return "medium"
    return "low"
