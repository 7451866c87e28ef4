"""Numbers, dates and durations for the dashboard, formatted for the page's locale with Babel."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import timedelta

from babel.dates import format_datetime, format_timedelta
from babel.numbers import format_decimal, format_percent

from i18n import gettext
from jobs.models import utcnow

__all__ = ("Formatter",)


@dataclass(frozen=True)
class Formatter:
    """Formatting in one locale (``en`` or ``ar``); times are shown in UTC, said so on the page."""

    locale: str

    def number(self, value: float | int | None) -> str:
        """``1,234`` / ``١٬٢٣٤``."""
        return format_decimal(value or 0, locale=self.locale)

    def decimal(self, value: float | None, digits: int = 1) -> str:
        """A number with at most ``digits`` decimals."""
        pattern = "#,##0." + "#" * digits if digits else "#,##0"
        return format_decimal(value or 0, format=pattern, locale=self.locale)

    def percent(self, fraction: float | None) -> str:
        """``12.5%`` (one decimal at most)."""
        return format_percent(fraction or 0, format="#,##0.#%", locale=self.locale)

    def datetime(self, value: dt.datetime | None) -> str:
        """Medium date and time (UTC)."""
        if value is None:
            return "—"
        return format_datetime(value, "medium", tzinfo=None, locale=self.locale)

    def time(self, value: dt.datetime | None) -> str:
        """Hour and minute (UTC)."""
        if value is None:
            return "—"
        return format_datetime(value, "HH:mm", locale=self.locale)

    def ago(self, value: dt.datetime | None) -> str:
        """``3 minutes ago``."""
        if value is None:
            return "—"
        return format_timedelta(value - utcnow(), add_direction=True, threshold=1.0, locale=self.locale)

    def seconds(self, value: float | None) -> str:
        """A duration: ``850 ms``, ``4.2 s``, ``3 min``."""
        if value is None:
            return "—"
        # Short units Babel has no narrow pattern for below a minute (words: in the catalogs).
        if value < 1:
            return gettext("admin.unit.milliseconds", self.locale, value=self.number(round(value * 1000)))
        if value < 60:
            return gettext("admin.unit.seconds", self.locale, value=self.decimal(value))
        return format_timedelta(timedelta(seconds=value), threshold=1.0, format="short", locale=self.locale)
