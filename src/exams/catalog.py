"""Parse and strictly validate exam catalog files (one exam object or a list of them).

The format is SPEC.md's "Exams catalog"; every problem raises `CatalogError` naming the exam,
the question and the field, so an operator can fix the file from the message alone.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal, TypeGuard, cast, get_args

import msgspec

from exams.definitions import ExamDefinition, QuestionDefinition, QuestionType
from exams.grading import MAX_TEXT_ANSWER_LENGTH, normalize_text

__all__ = ("SAMPLE_CATALOG_PATH", "CatalogError", "load_catalog_file", "parse_catalog")

#: The demo's English/Arabic sample catalog, shipped inside the package.
SAMPLE_CATALOG_PATH = Path(__file__).with_name("sample_catalog.json")

_CODE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Question ids become field paths such as ``answers.q3``, so a dot would make them ambiguous.
_QUESTION_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_QUESTION_TYPES: tuple[str, ...] = get_args(QuestionType)
_EXAM_KEYS = frozenset({"code", "status", "pass_percentage", "title", "questions"})
_QUESTION_KEYS = frozenset({"id", "topic", "type", "points", "prompt", "options", "answer", "tolerance"})
_CHOICE_TYPES = frozenset({"single_choice", "multiple_choice"})


class CatalogError(ValueError):
    """Raised when a catalog file is unreadable, is not JSON or breaks a catalog rule."""


def parse_catalog(raw: bytes | str) -> list[ExamDefinition]:
    """Decode and validate a catalog document, returning its exams in file order."""
    try:
        document: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        msg = f"catalog is not valid JSON: {exc}"
        raise CatalogError(msg) from exc
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        msg = "catalog must be an exam object or a list of exam objects"
        raise CatalogError(msg)
    if not document:
        msg = "catalog holds no exams"
        raise CatalogError(msg)
    exams: list[ExamDefinition] = []
    seen: set[str] = set()
    for index, item in enumerate(document, start=1):
        exam = _parse_exam(item, f"exam #{index}")
        if exam.code in seen:
            msg = f"exam {exam.code}: duplicate exam code in this catalog"
            raise CatalogError(msg)
        seen.add(exam.code)
        exams.append(exam)
    return exams


def load_catalog_file(path: Path) -> list[ExamDefinition]:
    """Read and parse one catalog file; errors (including unreadable files) name the path."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        msg = f"{path}: cannot read catalog file: {exc.strerror or exc}"
        raise CatalogError(msg) from exc
    try:
        return parse_catalog(raw)
    except CatalogError as exc:
        msg = f"{path}: {exc}"
        raise CatalogError(msg) from exc


def _fail(where: str, problem: str) -> CatalogError:
    return CatalogError(f"{where}: {problem}")


def _is_number(value: object) -> TypeGuard[float]:
    # bool is an int subclass, but `true` is never a meaningful number in a catalog.
    return isinstance(value, int | float) and not isinstance(value, bool) and _finite(value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:
        # Integers beyond float range cannot take part in float arithmetic later on.
        return False


def _check_keys(obj: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    # Unknown keys are rejected so a typo such as "tolerence" cannot silently fall back to a default.
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise _fail(where, f"unknown field(s) {', '.join(repr(k) for k in unknown)}")


def _localized(value: object, where: str, field: str) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise _fail(where, f'"{field}" must be an object of locale -> text, e.g. {{"en": "…"}}')
    for locale, text in value.items():
        if not locale:
            raise _fail(where, f'"{field}" has an empty locale key')
        if not isinstance(text, str) or not text.strip():
            raise _fail(where, f'"{field}" text for locale "{locale}" must be a non-empty string')
    if "en" not in value:
        raise _fail(where, f'"{field}" needs an English ("en") text')
    return cast("dict[str, str]", dict(value))


def _parse_exam(item: object, where: str) -> ExamDefinition:
    if not isinstance(item, dict):
        raise _fail(where, "must be an object")
    code = item.get("code")
    if not isinstance(code, str) or not code:
        raise _fail(where, '"code" must be a non-empty string')
    if not _CODE_RE.fullmatch(code):
        raise _fail(where, '"code" must be at most 64 letters, digits, "-", "_" or "."')
    where = f"exam {code}"
    _check_keys(item, _EXAM_KEYS, where)
    status = item.get("status", "open")
    if status not in ("open", "closed"):
        raise _fail(where, '"status" must be "open" or "closed"')
    pass_percentage = item.get("pass_percentage", 60)
    if not _is_number(pass_percentage) or not 0 <= pass_percentage <= 100:
        raise _fail(where, '"pass_percentage" must be a number from 0 to 100')
    if "title" not in item:
        raise _fail(where, '"title" is required')
    title = _localized(item["title"], where, "title")
    raw_questions = item.get("questions")
    if not isinstance(raw_questions, list) or not raw_questions:
        raise _fail(where, '"questions" must be a non-empty list')
    questions: list[QuestionDefinition] = []
    seen: set[str] = set()
    for index, raw_question in enumerate(raw_questions, start=1):
        question = _parse_question(raw_question, where, index)
        if question.id in seen:
            raise _fail(f"{where}, question {question.id}", "duplicate question id")
        seen.add(question.id)
        questions.append(question)
    return ExamDefinition(
        code=code,
        title=title,
        questions=questions,
        status=cast('Literal["open", "closed"]', status),
        pass_percentage=float(pass_percentage),
    )


def _parse_question(item: object, exam_where: str, index: int) -> QuestionDefinition:
    where = f"{exam_where}, question #{index}"
    if not isinstance(item, dict):
        raise _fail(where, "must be an object")
    qid = item.get("id")
    if not isinstance(qid, str) or not _QUESTION_ID_RE.fullmatch(qid):
        raise _fail(where, '"id" must be 1-64 letters, digits, "-" or "_"')
    where = f"{exam_where}, question {qid}"
    _check_keys(item, _QUESTION_KEYS, where)
    topic = item.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        raise _fail(where, '"topic" must be a non-empty string')
    qtype = item.get("type")
    if qtype not in _QUESTION_TYPES:
        raise _fail(where, f'"type" must be one of {", ".join(_QUESTION_TYPES)}')
    points = item.get("points")
    if not _is_number(points) or points <= 0:
        raise _fail(where, '"points" must be a number greater than 0')
    if "prompt" not in item:
        raise _fail(where, '"prompt" is required')
    prompt = _localized(item["prompt"], where, "prompt")
    if "answer" not in item:
        raise _fail(where, f'{qtype} question needs an "answer"')
    options: list[str] | None = None
    if qtype in _CHOICE_TYPES:
        options = _options(item.get("options"), where, qtype)
    elif "options" in item:
        raise _fail(where, f'{qtype} question takes no "options"')
    if qtype != "numeric" and "tolerance" in item:
        raise _fail(where, f'{qtype} question takes no "tolerance"')
    answer, tolerance = _answer(item, where, qtype, options)
    return QuestionDefinition(
        id=qid,
        topic=topic,
        type=cast("QuestionType", qtype),
        points=float(points),
        prompt=prompt,
        options=options,
        answer=answer,
        tolerance=tolerance,
    )


def _options(value: object, where: str, qtype: str) -> list[str]:
    if not isinstance(value, list) or len(value) < 2:
        raise _fail(where, f'{qtype} question needs "options": a list of at least 2 strings')
    if not all(isinstance(option, str) and option for option in value):
        raise _fail(where, '"options" must all be non-empty strings')
    if len(set(value)) != len(value):
        raise _fail(where, '"options" must be unique')
    return cast("list[str]", list(value))


def _answer(item: dict[str, Any], where: str, qtype: str, options: list[str] | None) -> tuple[Any, float | None]:
    answer = item["answer"]
    if qtype == "single_choice":
        if not isinstance(answer, str) or answer not in (options or []):
            raise _fail(where, 'single_choice "answer" must be one of the "options"')
        return answer, None
    if qtype == "multiple_choice":
        if not isinstance(answer, list) or not answer:
            raise _fail(where, 'multiple_choice "answer" must be a non-empty list of options')
        if not all(isinstance(choice, str) and choice in (options or []) for choice in answer):
            raise _fail(where, 'multiple_choice "answer" members must all be among the "options"')
        if len(set(answer)) != len(answer):
            raise _fail(where, 'multiple_choice "answer" members must be unique')
        return list(answer), None
    if qtype == "true_false":
        if not isinstance(answer, bool):
            raise _fail(where, 'true_false question needs a boolean "answer"')
        return answer, None
    if qtype == "numeric":
        if not _is_number(answer):
            raise _fail(where, 'numeric question needs a numeric "answer"')
        tolerance = item.get("tolerance", 0)
        if not _is_number(tolerance) or tolerance < 0:
            raise _fail(where, '"tolerance" must be a number >= 0')
        return float(answer), float(tolerance)
    # short_text: a bare string is the common single-answer case, so it is accepted as a list of one.
    accepted = [answer] if isinstance(answer, str) else answer
    if not isinstance(accepted, list) or not accepted:
        raise _fail(where, 'short_text "answer" must be a string or a non-empty list of strings')
    for text in accepted:
        if not isinstance(text, str) or not normalize_text(text):
            raise _fail(where, 'short_text "answer" entries must be non-blank strings')
        if len(text) > MAX_TEXT_ANSWER_LENGTH:
            raise _fail(where, f'short_text "answer" entries must be at most {MAX_TEXT_ANSWER_LENGTH} chars')
    return list(accepted), None
