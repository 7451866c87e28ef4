"""HTTP API of the exam catalog: list exams, one exam's questions (never the correct answers)."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.extensions.litestar.providers import create_service_dependencies
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import Parameter

from core.errors import NotFoundError
from core.openapi import documented, problem_responses
from core.web import request_locale
from exams.schemas import ExamDetail, ExamList, ExamSummary, QuestionPublic
from exams.services import ExamService
from i18n import localized

__all__ = ("ExamsController",)

_UNAVAILABLE = "The database is unavailable (`/problems/service-unavailable`, with `Retry-After`)."


class ExamsController(Controller):
    """The exam catalog, without correct answers."""

    path = "/api/exams"
    tags = ["exams"]  # noqa: RUF012
    #: ``exams_service``: an :class:`ExamService` on the request's ``db_session`` (SQLAlchemyPlugin).
    dependencies = create_service_dependencies(ExamService, key="exams_service")

    @get(
        "/",
        operation_id="ListExams",
        summary="List exams",
        cache=False,
        response_description="The catalog (titles in the request's language).",
        responses=problem_responses(_503=_UNAVAILABLE),
    )
    async def list_exams(
        self, request: Request[Any, Any, Any], exams_service: NamedDependency[ExamService]
    ) -> ExamList:
        """Every exam: code, title (in the request's language), question count, open or closed."""
        locale = request_locale(request)
        rows = await exams_service.list_exams()
        return ExamList(
            items=[
                ExamSummary(
                    code=row.code,
                    title=localized(row.title, locale, row.code),
                    question_count=row.question_count,
                    status=row.status,  # type: ignore[arg-type]
                    pass_percentage=row.pass_percentage,
                )
                for row in rows
            ]
        )

    @get(
        "/{code:str}",
        operation_id="GetExam",
        summary="One exam with its questions",
        cache=False,
        response_description="The exam (prompts in the request's language), without the correct answers.",
        responses=problem_responses(
            _404="No exam with this code (`/problems/not-found`).",
            _503=_UNAVAILABLE,
        ),
        operation_class=documented(),
    )
    async def get_exam(
        self,
        request: Request[Any, Any, Any],
        exams_service: NamedDependency[ExamService],
        code: str = Parameter(description="Exam code, e.g. MATH-101."),
    ) -> ExamDetail:
        """The exam's questions with prompts in the request's language and no correct answers."""
        locale = request_locale(request)
        exam = await exams_service.get_definition(code) if code.isprintable() else None
        if exam is None:
            raise NotFoundError("problem.not_found.exam", code=code[:64])
        return ExamDetail(
            code=exam.code,
            title=localized(exam.title, locale, exam.code),
            status=exam.status,
            pass_percentage=exam.pass_percentage,
            questions=[
                QuestionPublic(
                    id=q.id,
                    topic=q.topic,
                    type=q.type,
                    points=q.points,
                    prompt=localized(q.prompt, locale, ""),
                    options=q.options,
                    tolerance=q.tolerance if q.type == "numeric" else None,
                )
                for q in exam.questions
            ],
        )
