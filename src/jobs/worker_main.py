"""Module the Dramatiq CLI imports in each worker process (``exams worker``): sets up the broker."""

from __future__ import annotations

from core.logging import configure_logging
from core.settings import get_settings
from jobs.broker import create_broker

_settings = get_settings()
configure_logging(_settings.log_format, _settings.log_level)
broker = create_broker(_settings, worker=True)
