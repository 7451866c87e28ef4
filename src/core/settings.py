"""Settings of SPEC.md, read once from the environment and ``.env`` and validated at start-up.

A bad value raises :class:`SettingsError` naming the setting; the CLI prints that one line
and exits, so a misconfigured process never half-starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values

__all__ = ("Settings", "SettingsError", "get_settings", "load_settings")

QueueConnection = Literal["embedded", "redis", "rabbitmq"]
LogFormat = Literal["json", "console"]


class SettingsError(ValueError):
    """Raised when a setting is missing or has a value the product cannot use."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of the product (names as in SPEC.md, lower-cased)."""

    database_url: str = "sqlite+aiosqlite:///./var/exams.db"
    """SQLAlchemy async URL: SQLite for a laptop, ``postgresql+asyncpg://`` in production."""
    queue_connection: QueueConnection = "embedded"
    """``embedded`` (in-process worker), ``redis`` or ``rabbitmq``."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    ai_api_enabled: bool = True
    """``False``: rule-based recommendations and no AI call."""
    ai_api_timeout: float = 60.0
    """Seconds allowed for one AI request."""
    ai_api_base_url: str = ""
    """OpenAI-compatible base URL (``…/v1``); empty means the built-in fake AI, in process."""
    ai_api_key: str = ""
    ai_api_model: str = "gpt-4o-mini"
    job_max_retries: int = 3
    """Retries after a transient failure (so at most ``1 + job_max_retries`` attempts)."""
    job_retention_days: int = 7
    job_retry_backoff: float = 2.0
    """Seconds before the first retry; doubled each time (JOB_RETRY_BACKOFF)."""
    job_time_limit: float = 300.0
    """Seconds one attempt may run before it is stopped and retried (JOB_TIME_LIMIT)."""
    job_stale_after: float = 60.0
    """A ``processing`` job whose heartbeat is older than this is stalled (JOB_STALE_AFTER)."""
    admin_username: str = "admin"
    admin_password: str = ""
    secret_key: str = ""
    log_format: LogFormat = "json"
    log_level: str = "INFO"
    prometheus_multiproc_dir: str = ""
    fake_ai_latency: float = 3.0
    """Latency of the built-in fake AI used when ``AI_API_BASE_URL`` is empty (FAKE_AI_LATENCY)."""
    cors_allow_origins: tuple[str, ...] = ()
    """Browser origins allowed to call the API from another site (CORS_ALLOW_ORIGINS, comma-separated)."""
    worker_threads: int = 16
    """Worker threads of the embedded worker (WORKER_THREADS); each holds one job."""
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite (single host, embedded default)."""
        return self.database_url.startswith("sqlite")

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with some fields replaced (tests and the demo use it)."""
        return replace(self, **changes)  # type: ignore[arg-type]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    msg = f"{name} must be true or false, got {raw!r}"
    raise SettingsError(msg)


def _number(name: str, raw: str, *, minimum: float, integer: bool = False) -> float:
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        msg = f"{name} must be {kind}, got {raw!r}"
        raise SettingsError(msg) from None
    if not value >= minimum:  # also false for NaN
        msg = f"{name} must be at least {minimum:g}, got {raw!r}"
        raise SettingsError(msg)
    return value


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        msg = f"{name} must be one of {', '.join(choices)}, got {raw!r}"
        raise SettingsError(msg)
    return value


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        msg = f"{name} must start with {' or '.join(s + '://' for s in schemes)}, got {_redact(value)!r}"
        raise SettingsError(msg)
    return value


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Build settings from ``environ`` (default: ``os.environ``) over the values of ``.env``."""
    source: dict[str, str] = {}
    dotenv = env_file if env_file is not None else Path(".env")
    if dotenv.is_file():
        source.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    source.update(os.environ if environ is None else environ)

    def get(name: str) -> str | None:
        value = source.get(name)
        return value if value not in (None, "") else None

    kwargs: dict[str, object] = {}
    if (raw := get("DATABASE_URL")) is not None:
        kwargs["database_url"] = _url(
            "DATABASE_URL", raw, ("sqlite+aiosqlite", "postgresql+asyncpg", "postgresql+psycopg")
        )
    if (raw := get("QUEUE_CONNECTION")) is not None:
        kwargs["queue_connection"] = _choice("QUEUE_CONNECTION", raw, ("embedded", "redis", "rabbitmq"))
    if (raw := get("REDIS_URL")) is not None:
        kwargs["redis_url"] = _url("REDIS_URL", raw, ("redis", "rediss", "unix"))
    if (raw := get("RABBITMQ_URL")) is not None:
        kwargs["rabbitmq_url"] = _url("RABBITMQ_URL", raw, ("amqp", "amqps"))
    if (raw := get("AI_API_ENABLED")) is not None:
        kwargs["ai_api_enabled"] = _bool("AI_API_ENABLED", raw)
    if (raw := get("AI_API_TIMEOUT")) is not None:
        kwargs["ai_api_timeout"] = _number("AI_API_TIMEOUT", raw, minimum=0.1)
    if (raw := get("AI_API_BASE_URL")) is not None:
        kwargs["ai_api_base_url"] = _url("AI_API_BASE_URL", raw, ("http", "https")).rstrip("/")
    if (raw := get("AI_API_KEY")) is not None:
        kwargs["ai_api_key"] = raw
    if (raw := get("AI_API_MODEL")) is not None:
        kwargs["ai_api_model"] = raw
    if (raw := get("JOB_MAX_RETRIES")) is not None:
        kwargs["job_max_retries"] = int(_number("JOB_MAX_RETRIES", raw, minimum=0, integer=True))
    if (raw := get("JOB_RETENTION_DAYS")) is not None:
        kwargs["job_retention_days"] = int(_number("JOB_RETENTION_DAYS", raw, minimum=1, integer=True))
    if (raw := get("JOB_RETRY_BACKOFF")) is not None:
        kwargs["job_retry_backoff"] = _number("JOB_RETRY_BACKOFF", raw, minimum=0)
    if (raw := get("JOB_TIME_LIMIT")) is not None:
        kwargs["job_time_limit"] = _number("JOB_TIME_LIMIT", raw, minimum=1)
    if (raw := get("JOB_STALE_AFTER")) is not None:
        kwargs["job_stale_after"] = _number("JOB_STALE_AFTER", raw, minimum=5)
    if (raw := get("ADMIN_USERNAME")) is not None:
        kwargs["admin_username"] = raw
    if (raw := get("ADMIN_PASSWORD")) is not None:
        kwargs["admin_password"] = raw
    if (raw := get("SECRET_KEY")) is not None:
        if len(raw) < 16:
            msg = "SECRET_KEY must be at least 16 characters long"
            raise SettingsError(msg)
        kwargs["secret_key"] = raw
    if (raw := get("LOG_FORMAT")) is not None:
        kwargs["log_format"] = _choice("LOG_FORMAT", raw, ("json", "console"))
    if (raw := get("LOG_LEVEL")) is not None:
        kwargs["log_level"] = _choice("LOG_LEVEL", raw, ("debug", "info", "warning", "error")).upper()
    if (raw := get("PROMETHEUS_MULTIPROC_DIR")) is not None:
        kwargs["prometheus_multiproc_dir"] = raw
    if (raw := get("FAKE_AI_LATENCY")) is not None:
        kwargs["fake_ai_latency"] = _number("FAKE_AI_LATENCY", raw, minimum=0)
    if (raw := get("CORS_ALLOW_ORIGINS")) is not None:
        origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
        for origin in origins:
            if origin != "*":
                _url("CORS_ALLOW_ORIGINS", origin, ("http", "https"))
        kwargs["cors_allow_origins"] = origins
    if (raw := get("WORKER_THREADS")) is not None:
        kwargs["worker_threads"] = int(_number("WORKER_THREADS", raw, minimum=1, integer=True))
    settings = Settings(**kwargs)  # type: ignore[arg-type]
    if settings.job_stale_after <= 2 * _HEARTBEAT_SECONDS:
        msg = f"JOB_STALE_AFTER must be more than {2 * _HEARTBEAT_SECONDS:g} seconds (two heartbeats)"
        raise SettingsError(msg)
    return settings


#: Workers refresh a running job's heartbeat at least this often (seconds).
_HEARTBEAT_SECONDS = 2.0


@cache
def get_settings() -> Settings:
    """Return the process's settings, read once."""
    return load_settings()
