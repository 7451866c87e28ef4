"""Settings of SPEC.md, declared once, read from the environment and ``.env`` and validated at start-up.

:class:`Settings` is the one declaration: each field carries its type, default, constraints and
description. :func:`load_settings` converts the raw strings generically from those declarations
(``msgspec.convert``); nothing here is written per setting. A bad value raises
:class:`SettingsError`, one line naming the setting in its environment spelling; the CLI prints
that line and exits, so a misconfigured process never half-starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import msgspec
from dotenv import dotenv_values
from msgspec import Meta, inspect

__all__ = ("Settings", "SettingsError", "check_production", "load_settings", "redact_url", "settings_reference")

QueueConnection = Literal["embedded", "redis", "rabbitmq"]
LogFormat = Literal["json", "console"]
AIFallback = Literal["rule_based", "fail"]
ApiAuth = Literal["off", "tokens"]

#: Workers refresh a running job's heartbeat at least this often (seconds).
_HEARTBEAT_SECONDS = 2.0


class SettingsError(ValueError):
    """Raised when a setting is missing or has a value the product cannot use."""


# --- declaration helpers: constraints and loading hints live in ``Meta`` ----------------------
#
# ``Meta.extra`` carries the hints the loader needs beyond msgspec's own constraints:
#   schemes  -- URL schemes accepted (case-insensitive, as ``urlsplit`` reads them)
#   wildcard -- a value also accepted verbatim (``*`` for CORS origins)
#   rstrip   -- characters stripped from the end (trailing ``/`` of HTTP base URLs)
#   choices  -- accepted values of a ``str`` field, matched case-insensitively
#   secret   -- never echo the value in an error


def _url(*schemes: str, wildcard: str | None = None, rstrip: str = "") -> Meta:
    alternatives = "|".join(re.escape(s) for s in schemes)
    pattern = rf"^(?i:{alternatives}):"
    if wildcard is not None:
        pattern = rf"^{re.escape(wildcard)}$|{pattern}"
    return Meta(pattern=pattern, extra={"schemes": schemes, "wildcard": wildcard, "rstrip": rstrip})


def _choices(*values: str) -> Meta:
    return Meta(pattern=rf"^(?:{'|'.join(re.escape(v) for v in values)})$", extra={"choices": values})


def _doc(description: str) -> Meta:
    return Meta(description=description)


_SECRET = Meta(extra={"secret": True})

#: ``N/second``, ``N/minute``, ``N/hour`` or ``N/day`` (read by ``access.rate_limit.Rate.parse``).
RequestRate = Annotated[
    str,
    Meta(
        pattern=r"^(?:[1-9][0-9]{0,8}/(?i:second|minute|hour|day))?$",
        extra={"requirement": "be N/second, N/minute, N/hour or N/day (e.g. 30/minute), or empty for no limit"},
    ),
]

HttpUrl = Annotated[str, _url("http", "https", rstrip="/")]
CorsOrigin = Annotated[str, _url("http", "https", wildcard="*", rstrip="/")]
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
CallbackHost = Annotated[
    str,
    Meta(
        pattern=rf"^(?:\*\.)?{_HOST_LABEL}(?:\.{_HOST_LABEL})*$|^\[?[0-9A-Fa-f:.]+\]?$",
        extra={"requirement": "list host names, IP addresses or *.domain wildcards"},
    ),
]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of the product (names as in SPEC.md, lower-cased; upper-cased in the environment)."""

    database_url: Annotated[
        str,
        _url("sqlite+aiosqlite", "postgresql+asyncpg", "postgresql+psycopg"),
        _doc("SQLAlchemy async URL: SQLite for a laptop, `postgresql+asyncpg://…` in production"),
    ] = "sqlite+aiosqlite:///./var/exams.db"
    queue_connection: Annotated[
        QueueConnection,
        _doc("`embedded` (in-process worker, one process), `redis` or `rabbitmq`"),
    ] = "embedded"
    redis_url: Annotated[str, _url("redis", "rediss", "unix"), _doc("broker when `QUEUE_CONNECTION=redis`")] = (
        "redis://127.0.0.1:6379/0"
    )
    rabbitmq_url: Annotated[str, _url("amqp", "amqps"), _doc("broker when `QUEUE_CONNECTION=rabbitmq`")] = (
        "amqp://guest:guest@127.0.0.1:5672/"
    )
    ai_api_enabled: Annotated[bool, _doc("`false`: rule-based recommendations, no AI call")] = True
    ai_api_timeout: Annotated[float, Meta(ge=0.1), _doc("seconds for one AI request")] = 60.0
    ai_api_base_url: Annotated[
        HttpUrl,
        _doc("OpenAI-compatible base URL (`…/v1`); empty means the built-in fake AI, in process"),
    ] = ""
    ai_api_key: Annotated[str, _SECRET, _doc("bearer key of the AI API")] = ""
    ai_api_model: Annotated[str, _doc("model name asked of the AI API")] = "gpt-4o-mini"
    ai_max_concurrency: Annotated[
        int, Meta(ge=1), _doc("AI requests in flight at once, across every worker process and host")
    ] = 50
    ai_rate_limit_per_minute: Annotated[
        int, Meta(ge=0), _doc("AI requests started per minute, across every worker process and host; `0`: no cap")
    ] = 0
    ai_circuit_failures: Annotated[
        int, Meta(ge=1), _doc("consecutive failed AI calls that open the circuit breaker")
    ] = 5
    ai_circuit_seconds: Annotated[
        float, Meta(ge=0.5), _doc("seconds the open circuit makes no AI call before one trial call decides")
    ] = 30.0
    ai_fallback: Annotated[
        AIFallback,
        _doc("`rule_based`: a job the AI cannot serve completes with rule-based recommendations; `fail`: it fails"),
    ] = "rule_based"
    job_max_retries: Annotated[
        int, Meta(ge=0), _doc("retries after a transient failure (so at most `1 + JOB_MAX_RETRIES` attempts)")
    ] = 3
    job_retention_days: Annotated[
        int, Meta(ge=1), _doc("finished jobs older than this many days are deleted daily by `exams scheduler`")
    ] = 7
    job_retry_backoff: Annotated[float, Meta(ge=0), _doc("seconds before the first retry, doubled each time")] = 2.0
    job_time_limit: Annotated[
        float, Meta(ge=1), _doc("seconds one attempt may run before it is stopped and retried")
    ] = 300.0
    job_stale_after: Annotated[
        float,
        Meta(ge=5),
        _doc("seconds after which a processing job whose heartbeat is older is stalled and re-sent"),
    ] = 60.0
    results_retention_days: Annotated[
        int,
        Meta(ge=0),
        _doc("results (grades) older than this many days are deleted daily by `exams scheduler`; `0`: kept forever"),
    ] = 0
    callback_secret: Annotated[
        str,
        Meta(min_length=16),
        _SECRET,
        _doc("key of the `X-Exams-Signature` HMAC-SHA256 of completion callbacks (at least 16 characters)"),
    ] = ""
    callback_allowed_hosts: Annotated[
        tuple[CallbackHost, ...],
        _doc("comma-separated hosts a `callback_url` may name: exact names or `*.example.edu`; empty: callbacks off"),
    ] = ()
    api_auth: Annotated[
        ApiAuth,
        _doc(
            "`off`: the exam-results API is open; `tokens`: it needs `Authorization: Bearer <token>` "
            "(`exams tokens create`; the student page gets its own short-lived token)"
        ),
    ] = "off"
    submit_rate_limit: Annotated[
        RequestRate,
        _doc(
            "submissions allowed per token (per client address with `API_AUTH=off` and for the student page), "
            "e.g. `30/minute` (`N/second|minute|hour|day`), shared by every web process; empty: no limit"
        ),
    ] = ""
    admin_username: Annotated[str, _doc("dashboard login name")] = "admin"
    admin_password: Annotated[str, _SECRET, _doc("dashboard password (`exams demo` generates and prints one)")] = ""
    secret_key: Annotated[
        str,
        Meta(min_length=16),
        _SECRET,
        _doc(
            "signs sessions, CSRF tokens and the student page's API tokens (at least 16 characters; "
            "`exams demo` generates one)"
        ),
    ] = ""
    log_format: Annotated[LogFormat, _doc("structlog renderer: `json` or `console`")] = "json"
    log_level: Annotated[
        str, _choices("DEBUG", "INFO", "WARNING", "ERROR"), _doc("`debug`, `info`, `warning` or `error`")
    ] = "INFO"
    prometheus_multiproc_dir: Annotated[
        str,
        _doc("directory shared by web and worker processes of one host for metrics (created if missing)"),
    ] = ""
    fake_ai_latency: Annotated[
        float, Meta(ge=0), _doc("seconds the built-in fake AI takes (only when `AI_API_BASE_URL` is empty)")
    ] = 3.0
    allow_fake_ai: Annotated[
        bool,
        _doc(
            "`true`: let production (PostgreSQL or a Redis/RabbitMQ broker) run with the built-in fake AI "
            "(`AI_API_BASE_URL` empty), for staging and load tests"
        ),
    ] = False
    cors_allow_origins: Annotated[
        tuple[CorsOrigin, ...],
        _doc("comma-separated browser origins (e.g. `https://school.example`) that may call the API; empty: no CORS"),
    ] = ()
    worker_threads: Annotated[
        int, Meta(ge=1), _doc("threads of the embedded worker (`exams serve` with `QUEUE_CONNECTION=embedded`)")
    ] = 16
    admin_session_minutes: Annotated[
        int, Meta(ge=5, le=10_080), _doc("minutes a dashboard login lasts before it must be renewed (5 to 10080)")
    ] = 480
    admin_retry_rate: Annotated[
        float,
        Meta(gt=0, le=1000),
        _doc("jobs per second a dashboard bulk retry or requeue sends, so the AI provider is not flooded"),
    ] = 5.0
    prometheus_url: Annotated[HttpUrl, _doc("Prometheus to link from the dashboard (empty: no link)")] = ""
    grafana_url: Annotated[HttpUrl, _doc("Grafana to link from the dashboard (empty: no link)")] = ""

    def __post_init__(self) -> None:
        if self.job_stale_after <= 2 * _HEARTBEAT_SECONDS:
            msg = f"JOB_STALE_AFTER must be more than {2 * _HEARTBEAT_SECONDS:g} seconds (two heartbeats)"
            raise SettingsError(msg)

    def __repr__(self) -> str:
        """Every field, with secrets and URL passwords masked (a repr may reach a log or a traceback)."""
        parts = []
        for name, field in _fields().items():
            value = getattr(self, name)
            hints = _unwrap(field.type)[1]
            if hints.get("secret") and value:
                value = "***"
            elif isinstance(value, str) and hints.get("schemes"):
                value = redact_url(value)
            parts.append(f"{name}={value!r}")
        return f"Settings({', '.join(parts)})"

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite (single host, embedded default)."""
        return self.database_url.startswith("sqlite")

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with some fields replaced (tests and the demo use it)."""
        return msgspec.structs.replace(self, **changes)


# --- the declaration, as msgspec sees it -------------------------------------------------------


def _unwrap(tp: inspect.Type) -> tuple[inspect.Type, Mapping[str, Any], str]:
    """The bare type, the merged ``Meta.extra`` hints, and the description of a declared type."""
    if isinstance(tp, inspect.Metadata):
        description = (tp.extra_json_schema or {}).get("description", "")
        return tp.type, tp.extra or {}, str(description)
    return tp, {}, ""


@cache
def _fields() -> dict[str, inspect.Field]:
    info = inspect.type_info(Settings)
    assert isinstance(info, inspect.StructType)
    return {f.name: f for f in info.fields}


@cache
def _literal_order() -> dict[frozenset[object], tuple[object, ...]]:
    """Literal values in declared order (msgspec's ``LiteralType`` sorts them), for error messages."""
    found: dict[frozenset[object], tuple[object, ...]] = {}

    def walk(annotation: object) -> None:
        if get_origin(annotation) is Literal:
            found[frozenset(get_args(annotation))] = get_args(annotation)
        for arg in get_args(annotation):
            walk(arg)

    for annotation in get_type_hints(Settings, include_extras=True).values():
        walk(annotation)
    return found


def _env_name(field_name: str) -> str:
    return field_name.upper()


def _as_text(value: object) -> str:
    """A value in the spelling one writes in ``.env``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_as_text(v) for v in value)
    return str(value)


def settings_reference() -> list[tuple[str, str, str]]:
    """``(ENV_NAME, default as written in .env, description)`` for every setting, in declaration order."""
    return [(_env_name(f.name), _as_text(f.default), _unwrap(f.type)[2]) for f in _fields().values()]


# --- loading: raw strings -> declared types ----------------------------------------------------

_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _choices_of(tp: inspect.Type, hints: Mapping[str, Any]) -> tuple[str, ...] | None:
    if isinstance(tp, inspect.LiteralType):
        return tuple(str(v) for v in _literal_order().get(frozenset(tp.values), tp.values))
    choices = hints.get("choices")
    return tuple(choices) if choices is not None else None


def _prepare(declared: inspect.Type, raw: str) -> object:
    """Turn one raw string into what ``msgspec.convert(..., strict=False)`` accepts for ``declared``.

    Keyed on the declared type: free text (a ``str`` with no pattern) is kept verbatim; everything
    else is stripped; booleans accept yes/no/on/off; choices match case-insensitively; tuples are
    comma-separated. A value that does not fit is passed on unchanged for msgspec to reject.
    """
    tp, hints, _ = _unwrap(declared)
    if isinstance(tp, inspect.VarTupleType):
        return [_prepare(tp.item_type, item) for item in raw.split(",") if item.strip()]
    if isinstance(tp, inspect.StrType) and tp.pattern is None:
        return raw
    value = raw.strip()
    if isinstance(tp, inspect.BoolType):
        return _BOOLS.get(value.lower(), raw)
    choices = _choices_of(tp, hints)
    if choices is not None:
        return next((c for c in choices if c.lower() == value.lower()), raw)
    if rstrip := hints.get("rstrip"):
        value = value.rstrip(rstrip)
    return value


# --- errors: msgspec's ValidationError -> one sentence naming the variable ----------------------

_AT = re.compile(r"^(?P<detail>.*) - at `\$\.(?P<field>\w+)(?:\[(?P<index>\d+)\])?`$")


def redact_url(url: str) -> str:
    """``url`` with the password of its user part (``user:password@``) shown as ``***``."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return url
    return url.replace(f":{password}@", ":***@") if password else url


def _bounds(tp: inspect.IntType | inspect.FloatType) -> str:
    parts = [
        f"{word} {bound:g}"
        for word, bound in (("at least", tp.ge), ("more than", tp.gt), ("at most", tp.le), ("less than", tp.lt))
        if bound is not None
    ]
    return " and ".join(parts)


def _requirement(tp: inspect.Type, hints: Mapping[str, Any], detail: str) -> str:
    """What the value must do, from the declared type and which check msgspec reports failing."""
    wrong_type = ", got `" in detail
    if isinstance(tp, inspect.BoolType):
        return "be true or false"
    if isinstance(tp, inspect.IntType):
        return "be a whole number" if wrong_type else f"be {_bounds(tp)}"
    if isinstance(tp, inspect.FloatType):
        return "be a number" if wrong_type else f"be {_bounds(tp)}"
    if requirement := hints.get("requirement"):
        return str(requirement)
    choices = _choices_of(tp, hints)
    if choices is not None:
        return f"be one of {', '.join(c.lower() for c in choices)}"
    if isinstance(tp, inspect.StrType):
        if schemes := hints.get("schemes"):
            start = f"start with {' or '.join(s + '://' for s in schemes)}"
            return f"be {hints['wildcard']} or {start}" if hints.get("wildcard") else start
        if tp.min_length is not None and "of length" in detail:
            return f"be at least {tp.min_length} characters long"
    return f"be valid ({detail})"


def _settings_error(error: msgspec.ValidationError, source: Mapping[str, object], raw: Mapping[str, str]) -> str:
    message = str(error)
    at = _AT.match(message)
    if at is None or at["field"] not in _fields():
        return message  # raised by Settings.__post_init__: already a sentence naming the setting
    name = at["field"]
    tp, hints, _ = _unwrap(_fields()[name].type)
    got: object = raw[name]
    if at["index"] is not None and isinstance(tp, inspect.VarTupleType):
        items = source[name]
        assert isinstance(items, list)
        got = items[int(at["index"])]
        tp, hints, _ = _unwrap(tp.item_type)
    sentence = f"{_env_name(name)} must {_requirement(tp, hints, at['detail'])}"
    secret = hints.get("secret") or _unwrap(_fields()[name].type)[1].get("secret")
    if secret:
        return sentence
    return f"{sentence}, got {redact_url(str(got))!r}"


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Build settings from ``environ`` (default: ``os.environ``) over the values of ``.env``.

    An empty value means the default.
    """
    source: dict[str, str] = {}
    dotenv = env_file if env_file is not None else Path(".env")
    if dotenv.is_file():
        source.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    source.update(os.environ if environ is None else environ)

    raw = {name: value for name in _fields() if (value := source.get(_env_name(name)))}
    data = {name: _prepare(_fields()[name].type, value) for name, value in raw.items()}
    try:
        return msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_settings_error(exc, data, raw)) from None


# --- production guard: what a deployment with shared services must not start with --------------

#: Words of the ``SECRET_KEY`` and ``ADMIN_PASSWORD`` examples this repository prints
#: (``docs/deployment.md``: ``change-me-to-a-long-random-string``; before,
#: ``paste-the-output-of: python3 -c …``) and their usual variants. A value containing one was
#: copied from an example, not generated: whoever read the documentation knows it.
_EXAMPLE_WORDS = ("change-me", "changeme", "change_me", "paste-the-output")
_GENERATE_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


def _is_example(value: str) -> bool:
    return any(word in value.lower() for word in _EXAMPLE_WORDS)


def _production_reason(settings: Settings) -> str | None:
    """What makes these settings a production deployment (shared services), or ``None``."""
    if not settings.is_sqlite:
        return "DATABASE_URL is PostgreSQL"
    if settings.queue_connection != "embedded":
        return f"QUEUE_CONNECTION={settings.queue_connection}"
    return None


def check_production(settings: Settings, *, web: bool) -> None:
    """Refuse to start production with demo-grade settings (SPEC "API access", production guard).

    Production is PostgreSQL or a Redis/RabbitMQ broker. There, a process that calls the AI
    (``web=False``: ``exams worker``) refuses the built-in fake AI unless ``ALLOW_FAKE_AI=true``;
    the web app (``web=True``: ``exams serve``, whose embedded worker calls the AI too) also
    refuses a missing or example ``SECRET_KEY`` or ``ADMIN_PASSWORD``. Raises
    :class:`SettingsError`: one line naming the setting, never its value.
    """
    reason = _production_reason(settings)
    if reason is None:
        return
    where = f"in production ({reason})"
    if web:
        if not settings.secret_key.strip():
            raise SettingsError(f"SECRET_KEY must be set {where}: generate one with {_GENERATE_KEY}")
        if _is_example(settings.secret_key):
            raise SettingsError(
                f"SECRET_KEY must not be the documentation's example {where}: generate one with {_GENERATE_KEY}"
            )
        if not settings.admin_password:
            raise SettingsError(f"ADMIN_PASSWORD must be set {where} (the dashboard's operator login)")
        if _is_example(settings.admin_password):
            raise SettingsError(f"ADMIN_PASSWORD must not be the documentation's example {where}")
    if settings.ai_api_enabled and not settings.ai_api_base_url and not settings.allow_fake_ai:
        raise SettingsError(
            f"AI_API_BASE_URL must be set {where}: empty means the built-in fake AI "
            "(set ALLOW_FAKE_AI=true to run with it anyway, or AI_API_ENABLED=false for rule-based recommendations)"
        )
