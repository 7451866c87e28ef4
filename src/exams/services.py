"""The exam catalog in the database: load (insert or replace), list and look up exams."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import select

from exams.definitions import ExamDefinition
from exams.models import Exam

__all__ = ("ExamService",)


class ExamService(SQLAlchemyAsyncRepositoryService[Exam]):
    """Operations on the exam catalog."""

    class Repo(SQLAlchemyAsyncRepository[Exam]):
        """Repository of :class:`Exam`."""

        model_type = Exam

    repository_type = Repo

    async def load(self, definitions: Sequence[ExamDefinition]) -> tuple[int, int]:
        """Insert new exams and replace existing ones by code; return (created, replaced)."""
        created = replaced = 0
        for definition in definitions:
            row = await self.repository.get_one_or_none(code=definition.code)
            payload = msgspec.to_builtins(definition)
            if row is None:
                row = Exam(code=definition.code)
                self.repository.session.add(row)
                created += 1
            else:
                replaced += 1
            row.status = definition.status
            row.pass_percentage = definition.pass_percentage
            row.title = dict(definition.title)
            row.question_count = len(definition.questions)
            row.definition = payload
        await self.repository.session.flush()
        return created, replaced

    async def get_definition(self, code: str) -> ExamDefinition | None:
        """Return the exam's full definition (with answers), or ``None``."""
        stmt = select(Exam.definition).where(Exam.code == code)
        raw = (await self.repository.session.execute(stmt)).scalar_one_or_none()
        return None if raw is None else msgspec.convert(raw, ExamDefinition)

    async def list_exams(self) -> Sequence[Exam]:
        """Every exam, ordered by code."""
        stmt = select(Exam).order_by(Exam.code)
        return list((await self.repository.session.execute(stmt)).scalars().all())
