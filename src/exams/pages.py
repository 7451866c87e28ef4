"""The student page: pick an exam, answer, submit, watch the progress bar."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from litestar import Request, get
from litestar.response import Template
from markupsafe import Markup

from core.web import request_locale
from i18n import SUPPORTED_LOCALES, catalog_keys, direction, gettext

__all__ = ("page_messages", "student_page")


@cache
def page_messages(locale: str) -> dict[str, str]:
    """Every ``page.*`` message in ``locale``, for the page's script."""
    return {key: gettext(key, locale) for key in sorted(catalog_keys("en")) if key.startswith("page.")}


@cache
def _messages_json(locale: str) -> Markup:
    # Readable UTF-8 rather than \u escapes; <, > and & escaped so nothing can close the <script>.
    text = json.dumps(page_messages(locale), ensure_ascii=False, sort_keys=True)
    escaped = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(escaped)  # noqa: S704 - our own catalog, serialised as JSON with every markup character escaped


@get("/", operation_id="StudentPage", include_in_schema=False, cache=False)
async def student_page(request: Request[Any, Any, Any]) -> Template:
    """Render the student page in the request's language."""
    locale = request_locale(request)

    def translate(key: str, **params: Any) -> str:
        return gettext(key, locale, **params)

    return Template(
        template_name="student/index.html",
        context={
            "locale": locale,
            "dir": direction(locale),
            "t": translate,
            "locales": [(code, gettext(f"page.lang.{code}", code)) for code in SUPPORTED_LOCALES],
            "messages_json": _messages_json(locale),
        },
        headers={"Content-Language": locale, "Cache-Control": "no-store", "Vary": "Accept-Language"},
    )
