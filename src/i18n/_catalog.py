"""Catalog loading, ``Accept-Language`` negotiation and message lookup."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

from babel import Locale as BabelLocale

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

Locale = Literal["en", "ar"]
SUPPORTED_LOCALES: tuple[Locale, ...] = ("en", "ar")
DEFAULT_LOCALE: Locale = "en"
_LOCALES_DIR = Path(__file__).parent / "locales"


@cache
def _catalog(locale: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted((_LOCALES_DIR / locale).glob("*.json")):
        entries = json.loads(path.read_text(encoding="utf-8"))
        clash = merged.keys() & entries.keys()
        if clash:
            msg = f"duplicate message keys in {path}: {sorted(clash)}"
            raise ValueError(msg)
        merged.update(entries)
    return merged


def catalog_keys(locale: str) -> set[str]:
    """Return every message key of one locale's catalog."""
    return set(_catalog(locale))


def _coerce(tag: str) -> Locale | None:
    primary = tag.strip().lower().replace("_", "-").split("-", 1)[0]
    for locale in SUPPORTED_LOCALES:
        if primary == locale:
            return locale
    return None


def negotiate(query_lang: str | None, accept_language: str | None) -> Locale:
    """Pick the locale: ``?lang=`` first, then ``Accept-Language`` by quality, then English."""
    if query_lang:
        chosen = _coerce(query_lang)
        if chosen:
            return chosen
    if accept_language:
        ranked: list[tuple[float, int, str]] = []
        for index, part in enumerate(accept_language.split(",")[:20]):
            tag, _, params = part.strip().partition(";")
            quality = 1.0
            if params.strip().startswith("q="):
                try:
                    quality = float(params.strip()[2:])
                except ValueError:
                    quality = 0.0
            if tag and quality > 0:
                ranked.append((-quality, index, tag))
        for _, _, tag in sorted(ranked):
            chosen = _coerce(tag)
            if chosen:
                return chosen
    return DEFAULT_LOCALE


def direction(locale: str) -> Literal["ltr", "rtl"]:
    """Return the text direction of ``locale``."""
    return "rtl" if BabelLocale.parse(locale).text_direction == "rtl" else "ltr"


@cache
def _plural_form(locale: str, count: int) -> str:
    return str(BabelLocale.parse(locale).plural_form(count))


def gettext(key: str, locale: str | None = None, /, **params: Any) -> str:
    """Translate ``key`` into ``locale`` (default: the current one), formatting ``params``.

    A key missing from the locale falls back to English, then to the key itself, so a
    missing translation never breaks a response (a test keeps the catalogs complete).
    """
    loc = locale or DEFAULT_LOCALE
    entry = _catalog(loc).get(key)
    if entry is None:
        entry = _catalog(DEFAULT_LOCALE).get(key, key)
    if isinstance(entry, dict):
        count = params.get("count", 0)
        entry = entry.get(_plural_form(loc, int(count)), entry.get("other", key))
    text = str(entry)
    if params:
        try:
            return text.format(**params)
        except (KeyError, IndexError, ValueError):
            return text
    return text


def localized(texts: Mapping[str, str], locale: str, default: str = "") -> str:
    """Pick from content given per language (exam titles, prompts): ``locale``, else English, else ``default``."""
    return texts.get(locale) or texts.get(DEFAULT_LOCALE) or default
