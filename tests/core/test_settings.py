"""Settings of SPEC.md: parsing, defaults, validation, ``.env``, and the one-line error at start-up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from core.settings import Settings, SettingsError, load_settings, settings_reference
from support import EXAMS

DEPLOYMENT_DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


@pytest.fixture
def no_env(tmp_path: Path) -> Path:
    """A ``.env`` path that does not exist (so the developer's own file never leaks in)."""
    return tmp_path / "absent.env"


def test_defaults_are_the_spec_defaults(no_env: Path) -> None:
    settings = load_settings({}, env_file=no_env)
    assert settings.database_url == "sqlite+aiosqlite:///./var/exams.db"
    assert settings.queue_connection == "embedded"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.rabbitmq_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.ai_api_enabled is True
    assert settings.ai_api_timeout == 60
    assert settings.ai_api_base_url == ""
    assert settings.job_max_retries == 3
    assert settings.job_retention_days == 7
    assert settings.log_format == "json"
    assert settings.prometheus_multiproc_dir == ""
    assert settings.is_sqlite


def test_every_spec_setting_is_read(no_env: Path) -> None:
    environ = {
        "DATABASE_URL": "postgresql+asyncpg://exams:pw@db.internal:5432/exams",
        "QUEUE_CONNECTION": "rabbitmq",
        "REDIS_URL": "redis://cache.internal:6380/3",
        "RABBITMQ_URL": "amqp://user:pass@mq.internal:5672/vhost",
        "AI_API_ENABLED": "false",
        "AI_API_TIMEOUT": "12.5",
        "AI_API_BASE_URL": "https://ai.example.com/v1/",
        "AI_API_KEY": "sk-test-123",
        "AI_API_MODEL": "gpt-test",
        "JOB_MAX_RETRIES": "5",
        "JOB_RETENTION_DAYS": "30",
        "ADMIN_USERNAME": "root",
        "ADMIN_PASSWORD": "hunter2hunter2",
        "SECRET_KEY": "0123456789abcdef0123",
        "LOG_FORMAT": "console",
        "PROMETHEUS_MULTIPROC_DIR": "/tmp/prom",
    }
    settings = load_settings(environ, env_file=no_env)
    assert settings.database_url == environ["DATABASE_URL"]
    assert not settings.is_sqlite
    assert settings.queue_connection == "rabbitmq"
    assert settings.redis_url == environ["REDIS_URL"]
    assert settings.rabbitmq_url == environ["RABBITMQ_URL"]
    assert settings.ai_api_enabled is False
    assert settings.ai_api_timeout == 12.5
    assert settings.ai_api_base_url == "https://ai.example.com/v1"
    assert settings.ai_api_key == "sk-test-123"
    assert settings.ai_api_model == "gpt-test"
    assert settings.job_max_retries == 5
    assert settings.job_retention_days == 30
    assert settings.admin_username == "root"
    assert settings.admin_password == "hunter2hunter2"
    assert settings.secret_key == "0123456789abcdef0123"
    assert settings.log_format == "console"
    assert settings.prometheus_multiproc_dir == "/tmp/prom"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("YES", True), ("on", True), ("false", False), ("0", False), ("No", False)],
)
def test_booleans(no_env: Path, raw: str, expected: bool) -> None:
    assert load_settings({"AI_API_ENABLED": raw}, env_file=no_env).ai_api_enabled is expected


@pytest.mark.parametrize("queue", ["embedded", "redis", "rabbitmq", "Redis"])
def test_queue_connections(no_env: Path, queue: str) -> None:
    assert load_settings({"QUEUE_CONNECTION": queue}, env_file=no_env).queue_connection == queue.lower()


def test_zero_retries_is_allowed(no_env: Path) -> None:
    assert load_settings({"JOB_MAX_RETRIES": "0"}, env_file=no_env).job_max_retries == 0


def test_an_empty_value_means_the_default(no_env: Path) -> None:
    assert load_settings({"QUEUE_CONNECTION": "", "AI_API_TIMEOUT": ""}, env_file=no_env) == Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QUEUE_CONNECTION", "kafka"),
        ("AI_API_TIMEOUT", "abc"),
        ("AI_API_TIMEOUT", "0"),
        ("AI_API_TIMEOUT", "nan"),
        ("JOB_MAX_RETRIES", "-1"),
        ("JOB_MAX_RETRIES", "2.5"),
        ("JOB_RETENTION_DAYS", "0"),
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "postgresql://u@h/db"),  # not an async driver
        ("AI_API_ENABLED", "maybe"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("RABBITMQ_URL", "redis://127.0.0.1"),
        ("AI_API_BASE_URL", "ftp://ai.example.com"),
        ("LOG_FORMAT", "xml"),
        ("SECRET_KEY", "short"),
    ],
)
def test_bad_values_name_the_setting(no_env: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value}, env_file=no_env)
    message = str(caught.value)
    assert name in message
    assert "\n" not in message


def test_a_bad_url_does_not_print_its_password(no_env: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"DATABASE_URL": "mysql://admin:s3cr3t-pw@db/exams"}, env_file=no_env)
    assert "DATABASE_URL" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value)


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        '# local settings\nQUEUE_CONNECTION=redis\nJOB_MAX_RETRIES=7\nAI_API_MODEL="from-dotenv"\nADMIN_USERNAME=dot\n'
    )
    from_file = load_settings({}, env_file=dotenv)
    assert (from_file.queue_connection, from_file.job_max_retries, from_file.ai_api_model) == (
        "redis",
        7,
        "from-dotenv",
    )
    mixed = load_settings({"JOB_MAX_RETRIES": "1", "ADMIN_USERNAME": "env"}, env_file=dotenv)
    assert mixed.job_max_retries == 1
    assert mixed.admin_username == "env"
    assert mixed.queue_connection == "redis"  # still from .env


def test_a_bad_value_in_dotenv_names_the_setting(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("AI_API_TIMEOUT=soon\n")
    with pytest.raises(SettingsError, match="AI_API_TIMEOUT"):
        load_settings({}, env_file=dotenv)
    # a good value in the environment overrides the bad one in the file
    assert load_settings({"AI_API_TIMEOUT": "5"}, env_file=dotenv).ai_api_timeout == 5


def test_the_default_dotenv_is_the_one_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("AI_API_MODEL=cwd-model\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings({}).ai_api_model == "cwd-model"


# --- the declaration: every field, its string form, its reference ----------------------------

#: One non-default value per setting, as written in the environment, and the value it must become.
#: Keyed by the declaration: a new field without an entry here (or without a working conversion) fails.
FROM_THE_ENVIRONMENT: dict[str, tuple[str, object]] = {
    "DATABASE_URL": ("postgresql+psycopg://u:pw@db/exams", "postgresql+psycopg://u:pw@db/exams"),
    "QUEUE_CONNECTION": (" RabbitMQ ", "rabbitmq"),
    "REDIS_URL": ("rediss://cache:6380/1", "rediss://cache:6380/1"),
    "RABBITMQ_URL": ("amqps://mq/vhost", "amqps://mq/vhost"),
    "AI_API_ENABLED": ("off", False),
    "AI_API_TIMEOUT": ("3.5", 3.5),
    "AI_API_BASE_URL": ("http://127.0.0.1:9000/v1/", "http://127.0.0.1:9000/v1"),
    "AI_API_KEY": ("sk-abc", "sk-abc"),
    "AI_API_MODEL": ("gpt-test", "gpt-test"),
    "JOB_MAX_RETRIES": (" 0 ", 0),
    "JOB_RETENTION_DAYS": ("30", 30),
    "JOB_RETRY_BACKOFF": ("0.5", 0.5),
    "JOB_TIME_LIMIT": ("120", 120.0),
    "JOB_STALE_AFTER": ("6", 6.0),
    "RESULTS_RETENTION_DAYS": ("365", 365),
    "CALLBACK_SECRET": ("0123456789abcdef-callbacks", "0123456789abcdef-callbacks"),
    "CALLBACK_ALLOWED_HOSTS": (
        " hooks.school.example, *.district.example.edu ,",
        ("hooks.school.example", "*.district.example.edu"),
    ),
    "ADMIN_USERNAME": ("root", "root"),
    "ADMIN_PASSWORD": (" spaced pw ", " spaced pw "),  # free text is kept verbatim
    "SECRET_KEY": ("0123456789abcdef", "0123456789abcdef"),
    "LOG_FORMAT": ("Console", "console"),
    "LOG_LEVEL": ("warning", "WARNING"),
    "PROMETHEUS_MULTIPROC_DIR": ("/tmp/prom", "/tmp/prom"),
    "FAKE_AI_LATENCY": ("0", 0.0),
    "ALLOW_FAKE_AI": ("yes", True),
    "CORS_ALLOW_ORIGINS": (
        "https://school.example/, http://localhost:5173 ,,*",
        ("https://school.example", "http://localhost:5173", "*"),
    ),
    "WORKER_THREADS": ("4", 4),
    "ADMIN_SESSION_MINUTES": ("60", 60),
    "ADMIN_RETRY_RATE": ("2.5", 2.5),
    "PROMETHEUS_URL": ("http://prometheus:9090/", "http://prometheus:9090"),
    "GRAFANA_URL": ("https://grafana.example/d/exams", "https://grafana.example/d/exams"),
    "AI_MAX_CONCURRENCY": ("3", 3),
    "AI_RATE_LIMIT_PER_MINUTE": ("600", 600),
    "AI_CIRCUIT_FAILURES": ("2", 2),
    "AI_CIRCUIT_SECONDS": ("2.5", 2.5),
    "AI_FALLBACK": ("FAIL", "fail"),
    "API_AUTH": ("TOKENS", "tokens"),
    "SUBMIT_RATE_LIMIT": ("30/minute", "30/minute"),
}

REFERENCE_NAMES = [name for name, _, _ in settings_reference()]


def test_the_reference_lists_every_field_once() -> None:
    assert [name.upper() for name in Settings.__struct_fields__] == REFERENCE_NAMES
    assert set(FROM_THE_ENVIRONMENT) == set(REFERENCE_NAMES)


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_every_setting_is_read_from_its_string_form(no_env: Path, name: str) -> None:
    if name not in FROM_THE_ENVIRONMENT:
        pytest.fail(f"{name} is declared but FROM_THE_ENVIRONMENT has no example of it")
    raw, expected = FROM_THE_ENVIRONMENT[name]
    value = getattr(load_settings({name: raw}, env_file=no_env), name.lower())
    assert value == expected
    assert type(value) is type(expected)
    assert value != getattr(Settings(), name.lower()), "the example must differ from the default"


def test_the_reference_defaults_read_back_as_the_defaults(no_env: Path) -> None:
    environ = {name: default for name, default, _ in settings_reference() if default}
    assert load_settings(environ, env_file=no_env) == Settings()


def test_every_setting_has_a_description_and_is_documented() -> None:
    doc = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    for name, _, description in settings_reference():
        assert description, f"{name} has no description"
        assert f"`{name}`" in doc, f"{name} is missing from docs/deployment.md"


def test_with_overrides_returns_a_changed_copy(no_env: Path) -> None:
    settings = load_settings({}, env_file=no_env)
    changed = settings.with_overrides(ai_api_timeout=1.0, log_format="console")
    assert (changed.ai_api_timeout, changed.log_format) == (1.0, "console")
    assert (settings.ai_api_timeout, settings.log_format) == (60.0, "json")
    with pytest.raises(SettingsError, match="JOB_STALE_AFTER must be more than 4 seconds"):
        settings.with_overrides(job_stale_after=4.0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("QUEUE_CONNECTION", "kafka", "QUEUE_CONNECTION must be one of embedded, redis, rabbitmq, got 'kafka'"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of json, console, got 'xml'"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL must be one of debug, info, warning, error, got 'loud'"),
        ("AI_API_TIMEOUT", "0", "AI_API_TIMEOUT must be at least 0.1, got '0'"),
        ("AI_API_TIMEOUT", "nan", "AI_API_TIMEOUT must be at least 0.1, got 'nan'"),
        ("JOB_RETENTION_DAYS", "0", "JOB_RETENTION_DAYS must be at least 1, got '0'"),
        ("WORKER_THREADS", "0", "WORKER_THREADS must be at least 1, got '0'"),
        ("JOB_STALE_AFTER", "3", "JOB_STALE_AFTER must be at least 5, got '3'"),
        ("AI_API_TIMEOUT", "abc", "AI_API_TIMEOUT must be a number, got 'abc'"),
        ("JOB_MAX_RETRIES", "abc", "JOB_MAX_RETRIES must be a whole number, got 'abc'"),
        ("JOB_MAX_RETRIES", "2.5", "JOB_MAX_RETRIES must be a whole number, got '2.5'"),
        ("AI_API_ENABLED", "maybe", "AI_API_ENABLED must be true or false, got 'maybe'"),
        (
            "DATABASE_URL",
            "mysql://x",
            "DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg:// or postgresql+psycopg://,"
            " got 'mysql://x'",
        ),
        ("REDIS_URL", "http://h", "REDIS_URL must start with redis:// or rediss:// or unix://, got 'http://h'"),
        ("AI_API_BASE_URL", "ftp://ai", "AI_API_BASE_URL must start with http:// or https://, got 'ftp://ai'"),
        (
            "CORS_ALLOW_ORIGINS",
            "https://ok.example, ftp://bad",
            "CORS_ALLOW_ORIGINS must be * or start with http:// or https://, got 'ftp://bad'",
        ),
        ("SECRET_KEY", "short", "SECRET_KEY must be at least 16 characters long"),
    ],
)
def test_the_error_is_one_sentence_naming_the_variable(no_env: Path, name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value}, env_file=no_env)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("DATABASE_URL", "postgresql://exams:s3cr3t-pw@db/exams"),
        ("REDIS_URL", "http://:s3cr3t-pw@cache:6379/0"),
        ("RABBITMQ_URL", "redis://user:s3cr3t-pw@mq:5672/"),
    ],
)
def test_a_bad_url_is_shown_with_its_password_redacted(no_env: Path, name: str, url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: url}, env_file=no_env)
    message = str(caught.value)
    assert message.startswith(f"{name} must start with ")
    assert "s3cr3t-pw" not in message
    assert ":***@" in message


def test_a_short_secret_key_is_not_echoed(no_env: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"SECRET_KEY": "hunter2"}, env_file=no_env)
    assert "hunter2" not in str(caught.value)


def test_the_environment_wins_over_dotenv_for_every_kind_of_setting(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "AI_API_ENABLED=false\nAI_API_TIMEOUT=5\nLOG_LEVEL=debug\nCORS_ALLOW_ORIGINS=https://a.example\n"
        "WORKER_THREADS=2\nAI_API_KEY=from-dotenv\n"
    )
    from_file = load_settings({}, env_file=dotenv)
    assert (from_file.ai_api_enabled, from_file.ai_api_timeout, from_file.log_level) == (False, 5.0, "DEBUG")
    assert (from_file.cors_allow_origins, from_file.worker_threads) == (("https://a.example",), 2)
    environ = {"AI_API_ENABLED": "true", "AI_API_TIMEOUT": "7", "CORS_ALLOW_ORIGINS": "*", "WORKER_THREADS": "3"}
    mixed = load_settings(environ, env_file=dotenv)
    assert (mixed.ai_api_enabled, mixed.ai_api_timeout, mixed.cors_allow_origins) == (True, 7.0, ("*",))
    assert mixed.worker_threads == 3
    assert (mixed.log_level, mixed.ai_api_key) == ("DEBUG", "from-dotenv")  # still from .env
    # an empty value in the environment means unset: the default, as before this rewrite
    assert load_settings({"WORKER_THREADS": ""}, env_file=dotenv).worker_threads == 16


# --- through the command line ------------------------------------------------------------------


def _clean_env(**env: str) -> dict[str, str]:
    """The test process's environment minus product settings (so only ``env`` configures the command)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "TMPDIR")
    clean = {k: v for k, v in os.environ.items() if not k.isupper() or k in keep}
    return {**clean, **env}


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXAMS, *args], cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=60, check=False
    )


def run_many(cases: list[tuple[list[str], dict[str, str]]], cwd: Path) -> list[tuple[int, str]]:
    """Run several commands at once (each start-up costs a second); return (exit code, stderr)."""
    procs = [
        subprocess.Popen(
            [EXAMS, *args], cwd=cwd, env=_clean_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args, env in cases
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append((proc.returncode, err + out))
    return results


def assert_one_line_naming(name: str, code: int, output: str) -> None:
    assert code != 0, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert name in lines[0], output
    assert "Traceback" not in output


BAD_SETTINGS = [
    ("QUEUE_CONNECTION", "kafka"),
    ("AI_API_TIMEOUT", "abc"),
    ("JOB_MAX_RETRIES", "-1"),
    ("DATABASE_URL", "mysql://x"),
    ("AI_API_ENABLED", "maybe"),
]


def test_serve_with_a_bad_setting_prints_one_line_and_exits(tmp_path: Path) -> None:
    results = run_many([(["serve", "--port", "1"], {name: value}) for name, value in BAD_SETTINGS], tmp_path)
    for (name, _), (code, output) in zip(BAD_SETTINGS, results, strict=True):
        assert_one_line_naming(name, code, output)


def test_other_commands_refuse_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    commands = [["migrate"], ["worker"], ["jobs", "list"], ["catalog", "load", __file__]]
    results = run_many([(command, {"AI_API_TIMEOUT": "abc"}) for command in commands], tmp_path)
    for code, output in results:
        assert_one_line_naming("AI_API_TIMEOUT", code, output)


def test_serve_reads_a_bad_setting_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("JOB_MAX_RETRIES=many\n")
    done = run_cli(["serve", "--port", "1"], tmp_path)
    assert_one_line_naming("JOB_MAX_RETRIES", done.returncode, done.stderr + done.stdout)


def test_the_environment_wins_over_dotenv_for_a_command(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DATABASE_URL=sqlite+aiosqlite:///{tmp_path / 'from-dotenv.db'}\n")
    done = run_cli(["migrate"], tmp_path, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'from-env.db'}")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "from-env.db").exists()
    assert not (tmp_path / "from-dotenv.db").exists()
