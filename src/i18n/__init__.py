"""English and Arabic message catalogs, locale negotiation and a translate function.

Catalogs live in ``src/i18n/locales/<locale>/<domain>.json``; every domain file is a flat
``{"key": "text"}`` object (a value may also be a CLDR plural map such as
``{"one": "…", "other": "…"}``). Placeholders use ``{name}`` (``str.format``).
"""

from __future__ import annotations

from i18n._catalog import (
    DEFAULT_LOCALE,
    SUPPORTED_LOCALES,
    Locale,
    catalog_keys,
    direction,
    gettext,
    localized,
    negotiate,
)

__all__ = (
    "DEFAULT_LOCALE",
    "SUPPORTED_LOCALES",
    "Locale",
    "catalog_keys",
    "direction",
    "gettext",
    "localized",
    "negotiate",
)
