"""Why a job failed: a stable machine code with its parameters, rendered in any language.

The job row keeps ``error_code`` and ``error_params``; the status document shows the code as is
and renders ``error_message`` from both in the request's language. The English rendering is
also stored in ``error_message`` (for the CLI, the logs and rows written before codes existed).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from i18n import gettext

__all__ = ("ERROR_CODES", "JobError", "render_error")

#: Every code and the message key it renders with.
ERROR_CODES: Final[dict[str, str]] = {
    "ai_busy": "job.error.ai_busy",
    "ai_unavailable": "job.error.ai_unavailable",
    "ai_invalid_answer": "job.error.ai_invalid_answer",
    "answers_invalid": "job.error.answers_invalid",
    "database_unavailable": "job.error.database_unavailable",
    "exam_closed": "validation.exam_closed",
    "exam_missing": "job.error.exam_missing",
    "internal_error": "job.error.internal_error",
    #: Always rendered with its ``attempts`` and ``cause`` (see :meth:`JobError.exhausted`).
    "retries_exhausted": "job.error.temporary",
    "temporary_error": "job.error.temporary",
    "time_limit": "job.error.time_limit",
}
#: Causes that keep their own code once retries are used up (the most useful thing to know).
_SPECIFIC_WHEN_EXHAUSTED: Final = frozenset({"ai_unavailable", "ai_invalid_answer", "time_limit"})


class JobError(msgspec.Struct, frozen=True):
    """One failure: ``code`` (one of :data:`ERROR_CODES`) and what its message needs."""

    code: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)

    def render(self, locale: str) -> str:
        """The message in ``locale``."""
        return render_error(self.code, self.params, locale)

    @property
    def english(self) -> str:
        """The English message (stored in ``error_message``)."""
        return self.render("en")

    def exhausted(self, attempts: int) -> JobError:
        """This transient cause, final after ``attempts`` attempts."""
        code = self.code if self.code in _SPECIFIC_WHEN_EXHAUSTED else "retries_exhausted"
        return JobError(code, {**self.params, "cause": self.code, "attempts": attempts})

    @classmethod
    def answers_invalid(cls, problems: list[tuple[str, str, dict[str, Any]]]) -> JobError:
        """The answers no longer fit the exam: each ``(field, message key, params)``."""
        return cls("answers_invalid", {"problems": [[field, key, dict(params)] for field, key, params in problems]})


def render_error(code: str, params: dict[str, Any], locale: str) -> str:
    """The message of ``code`` with ``params`` in ``locale``."""
    params = dict(params)
    attempts = params.pop("attempts", None)
    cause = params.pop("cause", None)
    if attempts is not None:
        reason = render_error(str(cause or code), params, locale)
        return gettext("job.error.retries_exhausted", locale, attempts=attempts, reason=reason)
    if code == "answers_invalid":
        details = "; ".join(
            f"{field}: {gettext(key, locale, **dict(values))}" for field, key, values in params.get("problems", [])
        )
        return gettext("job.error.answers_invalid", locale, details=details)
    return gettext(ERROR_CODES.get(code, "job.error.internal_error"), locale, **params)
