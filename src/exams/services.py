"""The exam catalog in the database: load (insert or replace), list and look up exams."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from advanced_alchemy.filters import CollectionFilter, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session

from exams.definitions import ExamDefinition
from exams.models import Exam

__all__ = ("ExamService",)


class ExamService(SQLAlchemyAsyncRepositoryService[Exam]):
    """Operations on the exam catalog."""

    class Repo(SQLAlchemyAsyncRepository[Exam]):
        """Repository of :class:`Exam`."""

        model_type = Exam

    repository_type = Repo

    def __init__(self, session: AsyncSession | async_scoped_session[AsyncSession], **kwargs: Any) -> None:
        # Callers catch SQLAlchemy's own errors (the CLI, the web app's 503): don't wrap them.
        kwargs.setdefault("wrap_exceptions", False)
        kwargs.setdefault("auto_commit", False)
        super().__init__(session=session, **kwargs)

    async def load(self, definitions: Sequence[ExamDefinition]) -> tuple[int, int]:
        """Insert new exams and replace existing ones by code; return (created, replaced)."""
        if not definitions:
            return 0, 0
        # The last definition of a repeated code wins (it replaces the earlier one).
        latest = {definition.code: definition for definition in definitions}
        existing = await self.count(CollectionFilter("code", list(latest)))
        created = len(latest) - existing
        rows = [
            Exam(
                code=definition.code,
                status=definition.status,
                pass_percentage=definition.pass_percentage,
                title=dict(definition.title),
                question_count=len(definition.questions),
                definition=msgspec.to_builtins(definition),
            )
            for definition in latest.values()
        ]
        await self.upsert_many(rows, match_fields=["code"], auto_commit=False)
        return created, len(definitions) - created

    async def get_definition(self, code: str) -> ExamDefinition | None:
        """Return the exam's full definition (with answers), or ``None``."""
        exam = await self.get_one_or_none(code=code)
        return None if exam is None else msgspec.convert(exam.definition, ExamDefinition)

    async def list_exams(self) -> Sequence[Exam]:
        """Every exam, ordered by code."""
        return await self.get_many(OrderBy("code", "asc"))
