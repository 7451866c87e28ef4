"""Reading the dashboard's filter fields (query string or form) into a :class:`JobFilter`.

Bad input never reaches the database: each bad field gets a message key, and the page shows the
errors instead of a list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs.admin_queries import STATUSES, JobFilter
from jobs.models import utcnow
from jobs.progress import STEPS

__all__ = ("RANGES", "STEP_CHOICES", "ParsedFilter", "parse_filter")

#: Time-range presets of the filter form (``created_at`` within the last …).
RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
STEP_CHOICES = (*STEPS, "failed")
_TEXT_MAX = {"exam": 64, "student": 128, "error": 200}


@dataclass
class ParsedFilter:
    """The filter, the raw values to put back in the form, and the errors (field -> message key)."""

    flt: JobFilter
    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every field was valid."""
        return not self.errors

    def query(self, **extra: str) -> str:
        """The filter as a query string (for links and the live rows' URL)."""
        from urllib.parse import urlencode

        items = {k: v for k, v in self.values.items() if v}
        items.update({k: v for k, v in extra.items() if v})
        return urlencode(items)


def _first(source: Mapping[str, Any], name: str) -> str:
    value = source.get(name)
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value).strip() if value is not None else ""


def _moment(raw: str) -> datetime | None:
    """A ``datetime-local`` value (``2026-11-28T10:30``, read as UTC) or ISO 8601 with an offset."""
    try:
        value = datetime.fromisoformat(raw)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):  # 0001-01-01T00:00+14:00 has no UTC time
        return None


def parse_filter(source: Mapping[str, Any], *, default_status: str = "") -> ParsedFilter:
    """Read ``status, exam, student, step, range, from, to, error, stalled`` from ``source``."""
    values = {
        name: _first(source, name)
        for name in ("status", "exam", "student", "step", "range", "from", "to", "error", "stalled")
    }
    if not values["status"] and default_status and "status" not in source:
        values["status"] = default_status
    errors: dict[str, str] = {}
    if values["status"] and values["status"] not in STATUSES:
        errors["status"] = "admin.filter.error.status"
    if values["step"] and values["step"] not in STEP_CHOICES:
        errors["step"] = "admin.filter.error.step"
    for name, limit in _TEXT_MAX.items():
        if len(values[name]) > limit:
            errors[name] = "admin.filter.error.too_long"
    if values["range"] and values["range"] not in RANGES:
        errors["range"] = "admin.filter.error.range"
    since = until = None
    if values["from"]:
        since = _moment(values["from"])
        if since is None:
            errors["from"] = "admin.filter.error.date"
    if values["to"]:
        until = _moment(values["to"])
        if until is None:
            errors["to"] = "admin.filter.error.date"
    if since and until and since >= until:
        errors["to"] = "admin.filter.error.order"
    if values["range"] in RANGES and since is None:
        since = utcnow() - RANGES[values["range"]]
    if values["stalled"] not in ("", "1", "on", "true"):
        errors["stalled"] = "admin.filter.error.stalled"
    values["stalled"] = "1" if values["stalled"] else ""
    flt = JobFilter(
        status=values["status"] or None,
        exam_code=values["exam"] or None,
        student_id=values["student"] or None,
        step=values["step"] or None,
        since=since,
        until=until,
        error=values["error"] or None,
        stalled=bool(values["stalled"]),
    )
    return ParsedFilter(flt, values, errors)
