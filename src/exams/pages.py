"""The student page: pick an exam, answer, submit, watch the progress bar.

With ``API_AUTH=tokens`` the page is rendered with a short-lived token of its own browser
session (``access.page``) that its script sends as ``Authorization: Bearer …``; with ``off`` the
page is the same without it.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.response import Template
from markupsafe import Markup

from access.web import ApiAccess
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
async def student_page(request: Request[Any, Any, Any], api_access: NamedDependency[ApiAccess]) -> Template:
    """Render the student page in the request's language (with its API token when tokens are required)."""
    locale = request_locale(request)
    credentials = api_access.page_credentials(request)

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
            "api_token": credentials.token if credentials is not None else None,
        },
        headers={"Content-Language": locale, "Cache-Control": "no-store", "Vary": "Accept-Language"},
        cookies=[credentials.cookie] if credentials is not None else None,
    )
