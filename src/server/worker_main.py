"""Module the Dramatiq CLI imports in each worker process (``exams worker``): builds the broker.

Importing it is the start-up of a worker process: the settings are read here, once, and
everything the worker runs with is built from them by :class:`~server.wiring.Wiring`.
"""

from __future__ import annotations

from core.logging import configure_logging
from core.settings import load_settings
from server.wiring import Wiring

_settings = load_settings()
configure_logging(_settings.log_format, _settings.log_level)
broker, _actor = Wiring(_settings).broker(worker=True)
