"""Checking a submission's JSON before it is stored: syntax, then shape, then against its exam."""

from __future__ import annotations

from typing import Any

import msgspec

from core.errors import MalformedRequestError, ValidationFailedError
from exams.definitions import ExamDefinition
from exams.grading import validate_answers
from jobs.schemas import MAX_CODE_LENGTH, MAX_ID_LENGTH, SubmitRequest
from jobs.services import Submission

__all__ = ("MAX_CODE_LENGTH", "MAX_ID_LENGTH", "check_against_exam", "check_shape", "decode_json", "to_submission")


def decode_json(body: bytes) -> object:
    """The body as plain JSON values; :class:`MalformedRequestError` (400) when it is not JSON
    (invalid UTF-8 included) or is nested too deeply to read."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise MalformedRequestError from None


def _string_field(
    data: dict[str, Any], name: str, max_length: int, errors: list[tuple[str, str, dict[str, Any]]]
) -> str:
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        errors.append((name, "validation.required", {}))
        return ""
    if not isinstance(value, str):
        errors.append((name, "validation.not_string", {}))
        return ""
    if len(value) > max_length:
        errors.append((name, "validation.too_long", {"max": max_length}))
        return ""
    if not _printable_text(value):
        errors.append((name, "validation.invalid_characters", {}))
        return ""
    return value.strip()


def _printable_text(value: object) -> bool:
    """No NUL or other control characters in any string (keys included); tabs and newlines are fine.

    Iterative, so that however deeply the JSON nests this never overflows the stack."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in item):
                return False
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def check_shape(data: object) -> SubmitRequest:
    """Check the body's fields and types; raise :class:`ValidationFailedError` listing every problem.

    The answers are kept as sent: :func:`check_against_exam` checks each against its question.
    """
    if not isinstance(data, dict):
        raise ValidationFailedError([("body", "validation.not_object", {})])
    errors: list[tuple[str, str, dict[str, Any]]] = []
    exam_code = _string_field(data, "exam_code", MAX_CODE_LENGTH, errors)
    student_id = _string_field(data, "student_id", MAX_ID_LENGTH, errors)
    answers = data.get("answers")
    if answers is None:
        errors.append(("answers", "validation.required", {}))
    elif not isinstance(answers, dict):
        errors.append(("answers", "validation.not_object", {}))
    callback_url = data.get("callback_url")
    if callback_url is not None and not isinstance(callback_url, str):
        errors.append(("callback_url", "validation.not_string", {}))
    for key in sorted(set(data) - {"exam_code", "student_id", "answers", "callback_url"})[:10]:
        errors.append((str(key)[:64], "validation.unknown_field", {}))
    if errors:
        raise ValidationFailedError(errors)
    assert isinstance(answers, dict)
    if not _printable_text(answers):
        raise ValidationFailedError([("answers", "validation.invalid_characters", {})])
    # The URL itself is checked against CALLBACK_ALLOWED_HOSTS by the handler (jobs.callbacks).
    return SubmitRequest(exam_code=exam_code, student_id=student_id, answers=answers, callback_url=callback_url)


def to_submission(
    request: SubmitRequest, locale: str, idempotency_key: str | None, *, owner: str | None = None
) -> Submission:
    """The submission to store for a checked request (``owner``: who sent it, see ``access``)."""
    return Submission(
        exam_code=request.exam_code,
        student_id=request.student_id,
        answers=request.answers,
        locale=locale,
        idempotency_key=idempotency_key,
        callback_url=request.callback_url,
        owner=owner,
    )


def check_against_exam(submission: Submission, exam: ExamDefinition | None) -> None:
    """Check the exam exists and is open, and that the answers fit its questions."""
    if exam is None:
        raise ValidationFailedError([("exam_code", "validation.exam_unknown", {"code": submission.exam_code})])
    if exam.status != "open":
        raise ValidationFailedError([("exam_code", "validation.exam_closed", {"code": submission.exam_code})])
    problems = validate_answers(exam, submission.answers)
    if problems:
        raise ValidationFailedError([(p.field, p.key, dict(p.params)) for p in problems])
