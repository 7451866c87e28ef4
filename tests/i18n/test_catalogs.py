"""The English and Arabic message catalogs stay complete and consistent; ``negotiate`` picks locales.

Every domain file of ``src/i18n/locales/en`` has an ``ar`` twin with the same keys, no empty
text, the same ``{placeholders}``, and plural maps with ``other`` (and every CLDR form Arabic uses).
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
from babel import Locale as BabelLocale

from i18n import DEFAULT_LOCALE, SUPPORTED_LOCALES, catalog_keys, gettext, negotiate

LOCALES_DIR = Path(__file__).resolve().parents[2] / "src" / "i18n" / "locales"
SRC = LOCALES_DIR.parents[1]
ARABIC = re.compile("[\u0600-\u06ff]")
CLDR_FORMS = {"zero", "one", "two", "few", "many", "other"}
DOMAINS = sorted(path.name for path in (LOCALES_DIR / "en").glob("*.json"))


def load(locale: str, domain: str) -> dict[str, Any]:
    data = json.loads((LOCALES_DIR / locale / domain).read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{locale}/{domain} is not a JSON object"
    return data


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def texts(value: Any) -> list[str]:
    return list(value.values()) if isinstance(value, dict) else [value]


def test_there_are_domains_and_both_locales_have_the_same_files() -> None:
    assert DOMAINS, "no catalogs found"
    for locale in SUPPORTED_LOCALES:
        assert sorted(p.name for p in (LOCALES_DIR / locale).glob("*.json")) == DOMAINS, locale


@pytest.mark.parametrize("domain", DOMAINS)
def test_en_and_ar_have_the_same_keys(domain: str) -> None:
    en, ar = load("en", domain), load("ar", domain)
    assert sorted(set(en) - set(ar)) == [], "missing in ar"
    assert sorted(set(ar) - set(en)) == [], "missing in en"


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("domain", DOMAINS)
def test_no_empty_or_non_string_text(locale: str, domain: str) -> None:
    for key, value in load(locale, domain).items():
        assert key, "empty key"
        assert key.strip() == key, f"bad key {key!r}"
        assert isinstance(value, str | dict), key
        for text in texts(value):
            assert isinstance(text, str), f"{locale}/{domain}: {key} is not text"
            assert text.strip(), f"{locale}/{domain}: {key} is empty"


@pytest.mark.parametrize("domain", DOMAINS)
def test_placeholders_are_identical(domain: str) -> None:
    en, ar = load("en", domain), load("ar", domain)
    for key in en.keys() & ar.keys():
        en_other = en[key]["other"] if isinstance(en[key], dict) else en[key]
        ar_other = ar[key]["other"] if isinstance(ar[key], dict) else ar[key]
        assert placeholders(ar_other) == placeholders(en_other), key
        if not isinstance(en[key], dict) and not isinstance(ar[key], dict):
            continue
        # Other plural forms may leave the count out ("one problem") but never invent names.
        for text in texts(en[key]) + texts(ar[key]):
            assert placeholders(text) <= placeholders(en_other), (key, text)


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("domain", DOMAINS)
def test_plural_maps_have_other_and_every_form_of_the_language(locale: str, domain: str) -> None:
    needed = set(BabelLocale.parse(locale).plural_form.tags) | {"other"}
    for key, value in load(locale, domain).items():
        if isinstance(value, dict):
            assert "other" in value, key
            assert set(value) <= CLDR_FORMS, (key, sorted(set(value) - CLDR_FORMS))
            assert needed <= set(value), (key, sorted(needed - set(value)))


@pytest.mark.parametrize("domain", DOMAINS)
def test_plural_kind_matches_between_locales(domain: str) -> None:
    en, ar = load("en", domain), load("ar", domain)
    for key in en.keys() & ar.keys():
        assert isinstance(en[key], dict) == isinstance(ar[key], dict), key


@pytest.mark.parametrize("domain", DOMAINS)
def test_arabic_texts_are_arabic(domain: str) -> None:
    for key, value in load("ar", domain).items():
        if re.search(r"\.lang\.[a-z]{2}$", key) and key[-2:] != "ar":
            continue  # a language switcher names each language in itself ("English")
        for text in texts(value):
            words = re.sub(r"\{[^}]*\}", "", text)
            if any(char.isalpha() for char in words):  # "{value}%" needs no translation
                assert ARABIC.search(words), f"ar/{domain}: {key} is not translated: {text!r}"


def test_keys_are_unique_across_domains() -> None:
    for locale in SUPPORTED_LOCALES:
        seen: dict[str, str] = {}
        for domain in DOMAINS:
            for key in load(locale, domain):
                assert key not in seen, f"{locale}: {key} in {seen.get(key)} and {domain}"
                seen[key] = domain
        assert catalog_keys(locale) == set(seen)


def test_every_literal_message_key_in_src_exists() -> None:
    # Keys written literally in the code (gettext("…") or an error's *_key / detail argument).
    pattern = re.compile(r"""["']((?:step|status|problem|validation|ready|job\.error)\.[a-z0-9_.]+)["']""")
    keys = catalog_keys("en")
    missing: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            if match.group(1) not in keys:
                missing.append(f"{path.relative_to(SRC)}: {match.group(1)}")
    assert missing == []


def test_every_step_and_status_has_a_label() -> None:
    steps = ["queued", "validating_exam", "processing_answers", "getting_ai_recommendations"]
    steps += ["finalizing_results", "completed", "failed"]
    for locale in SUPPORTED_LOCALES:
        for step in steps:
            assert f"step.{step}" in catalog_keys(locale)
        for status in ("pending", "processing", "completed", "failed"):
            assert f"status.{status}" in catalog_keys(locale)


def test_gettext_formats_plurals_and_falls_back() -> None:
    assert gettext("problem.validation.detail", "en", count=1) == "The submission has 1 problem; see errors."
    assert gettext("problem.validation.detail", "en", count=3) == "The submission has 3 problems; see errors."
    assert gettext("problem.not_found.exam", "ar", code="X-1").count("X-1") == 1
    assert gettext("no.such.key", "ar") == "no.such.key"


# --- negotiate -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "header", "expected"),
    [
        (None, None, "en"),
        ("", "", "en"),
        (None, "ar", "ar"),
        (None, "AR", "ar"),
        (None, "ar-EG", "ar"),
        (None, "ar_SA", "ar"),
        (None, "en-US,en;q=0.9", "en"),
        (None, "fr, ar;q=0.5", "ar"),
        (None, "fr, de;q=0.9, ar;q=0.1", "ar"),
        (None, "en;q=0.4, ar;q=0.8", "ar"),
        (None, "ar;q=0.8, en;q=0.8", "ar"),
        (None, "en;q=0.8, ar;q=0.8", "en"),
        (None, "ar;q=0", "en"),
        (None, "ar;q=0, en", "en"),
        (None, "ar;q=abc", "en"),
        (None, "de", "en"),
        (None, "*", "en"),
        (None, "arabic", "en"),
        (None, " , ;q=1, ", "en"),
        ("ar", None, "ar"),
        ("ar", "en", "ar"),
        ("en", "ar", "en"),
        ("AR-eg", None, "ar"),
        ("fr", "ar", "ar"),
        ("zz", None, "en"),
    ],
)
def test_negotiate(query: str | None, header: str | None, expected: str) -> None:
    assert negotiate(query, header) == expected


def test_negotiate_ignores_very_long_headers_beyond_the_first_tags() -> None:
    header = ", ".join(["de"] * 10_000 + ["ar"])
    assert negotiate(None, header) == DEFAULT_LOCALE
    assert negotiate(None, "ar, " + ", ".join(["de"] * 10_000)) == "ar"
