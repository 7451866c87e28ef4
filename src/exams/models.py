"""The ``exams`` table: one row per exam, its full definition stored as JSON."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.base import BigIntAuditBase
from advanced_alchemy.types import JsonB
from sqlalchemy import Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

__all__ = ("Exam",)


class Exam(BigIntAuditBase):
    """An exam of the catalog; ``definition`` holds questions with their correct answers."""

    __tablename__ = "exams"

    code: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    pass_percentage: Mapped[float] = mapped_column(Float, default=60.0)
    title: Mapped[dict[str, str]] = mapped_column(JsonB)
    question_count: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JsonB)
