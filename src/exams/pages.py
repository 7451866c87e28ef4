"""The student page: pick an exam, answer, submit, watch the progress bar."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.response import Template

from core.web import request_locale
from i18n import direction, gettext

__all__ = ("student_page",)


@get("/", operation_id="StudentPage", include_in_schema=False, cache=False)
async def student_page(request: Request[Any, Any, Any]) -> Template:
    """Render the student page in the request's language."""
    locale = request_locale(request)
    return Template(
        template_name="student/index.html",
        context={"locale": locale, "dir": direction(locale), "t": lambda key, **kw: gettext(key, locale, **kw)},
    )
