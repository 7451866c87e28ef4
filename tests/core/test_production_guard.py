"""The production guard (SPEC "API access"): with PostgreSQL or a Redis/RabbitMQ broker, start-up
refuses, in one line naming the setting, a missing or example ``SECRET_KEY``, a missing
``ADMIN_PASSWORD`` and the built-in fake AI unless ``ALLOW_FAKE_AI=true``."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from core.settings import Settings, SettingsError, check_production, load_settings
from support import EXAMS, NO_ENV_FILE, REDIS_URL, Process, free_port, sqlite_url

DEPLOYMENT_DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
PG_URL = "postgresql+asyncpg://exams:db-pw-3141@db.internal:5432/exams"
KEY = "k3y-" + "x" * 40
PASSWORD = "operator-pw-2718"
GENERATE = "generate one with python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"

#: Complete production settings: the guard lets them through.
GOOD = {
    "DATABASE_URL": PG_URL,
    "QUEUE_CONNECTION": "redis",
    "SECRET_KEY": KEY,
    "ADMIN_PASSWORD": PASSWORD,
    "AI_API_BASE_URL": "https://ai.example.com/v1",
}


def settings(**env: str) -> Settings:
    """``GOOD`` with some settings changed (an empty value means the default)."""
    return load_settings({**GOOD, **env}, env_file=NO_ENV_FILE)


def refusal(web: bool, **env: str) -> str:
    with pytest.raises(SettingsError) as raised:
        check_production(settings(**env), web=web)
    return str(raised.value)


def documented(name: str) -> str:
    """The value the deployment guide's ``.env`` example gives ``name``."""
    found = re.search(rf"^{name}=(.+)$", DEPLOYMENT_DOC.read_text(), re.MULTILINE)
    assert found, f"{name} is not in docs/deployment.md's .env example"
    return found[1].strip()


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"SECRET_KEY": "", "QUEUE_CONNECTION": "embedded"},
            f"SECRET_KEY must be set in production (DATABASE_URL is PostgreSQL): {GENERATE}",
        ),
        (
            {"SECRET_KEY": "", "DATABASE_URL": "sqlite+aiosqlite:///x.db", "QUEUE_CONNECTION": "rabbitmq"},
            f"SECRET_KEY must be set in production (QUEUE_CONNECTION=rabbitmq): {GENERATE}",
        ),
        (
            {"SECRET_KEY": " " * 20},
            f"SECRET_KEY must be set in production (DATABASE_URL is PostgreSQL): {GENERATE}",
        ),
        (
            {"SECRET_KEY": "please-CHANGE-ME-before-going-live"},
            "SECRET_KEY must not be the documentation's example in production (DATABASE_URL is PostgreSQL): "
            + GENERATE,
        ),
        (
            {"ADMIN_PASSWORD": ""},
            "ADMIN_PASSWORD must be set in production (DATABASE_URL is PostgreSQL) (the dashboard's operator login)",
        ),
        (
            {"AI_API_BASE_URL": ""},
            "AI_API_BASE_URL must be set in production (DATABASE_URL is PostgreSQL): empty means the built-in"
            " fake AI (set ALLOW_FAKE_AI=true to run with it anyway, or AI_API_ENABLED=false for rule-based"
            " recommendations)",
        ),
    ],
    ids=["no-key-postgresql", "no-key-rabbitmq", "blank-key", "example-key", "no-password", "fake-ai"],
)
def test_the_web_app_refuses_in_one_line_naming_the_setting(env: dict[str, str], line: str) -> None:
    assert refusal(True, **env) == line


def test_the_documented_examples_are_refused() -> None:
    key, password = documented("SECRET_KEY"), documented("ADMIN_PASSWORD")
    assert refusal(True, SECRET_KEY=key).startswith("SECRET_KEY must not be the documentation's example")
    assert refusal(True, ADMIN_PASSWORD=password).startswith("ADMIN_PASSWORD must not be the documentation's example")
    # The example this guide used to print, which a deployment may have copied.
    old = "paste-the-output-of: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
    assert refusal(True, SECRET_KEY=old).startswith("SECRET_KEY must not be the documentation's example")


def test_a_refusal_never_echoes_the_value() -> None:
    example = "our-key-CHANGE-ME-0123456789"
    assert example not in refusal(True, SECRET_KEY=example)
    assert "change-me-pw" not in refusal(True, ADMIN_PASSWORD="change-me-pw")
    assert "db-pw-3141" not in refusal(True, SECRET_KEY="")


def test_the_worker_checks_only_the_fake_ai() -> None:
    check_production(settings(SECRET_KEY="", ADMIN_PASSWORD=""), web=False)
    assert refusal(False, AI_API_BASE_URL="", SECRET_KEY="").startswith("AI_API_BASE_URL must be set in production")


@pytest.mark.parametrize("web", [True, False])
def test_allow_fake_ai_or_no_ai_lets_production_run_without_an_ai_url(web: bool) -> None:
    check_production(settings(AI_API_BASE_URL="", ALLOW_FAKE_AI="true"), web=web)
    check_production(settings(AI_API_BASE_URL="", AI_API_ENABLED="false"), web=web)
    assert settings().allow_fake_ai is False


@pytest.mark.parametrize("web", [True, False])
def test_complete_production_settings_pass(web: bool) -> None:
    check_production(settings(), web=web)
    check_production(settings(QUEUE_CONNECTION="rabbitmq", DATABASE_URL="sqlite+aiosqlite:///x.db"), web=web)


def test_embedded_sqlite_needs_none_of_it() -> None:
    bare = load_settings({}, env_file=NO_ENV_FILE)
    assert (bare.is_sqlite, bare.queue_connection, bare.secret_key, bare.ai_api_base_url) == (True, "embedded", "", "")
    check_production(bare, web=True)
    check_production(bare, web=False)


# --- through the command line ------------------------------------------------------------------


def _environment(tmp_path: Path, **env: str) -> dict[str, str]:
    """The test process's environment without product settings, plus ``env`` (no ``.env`` in ``tmp_path``)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "TMPDIR")
    clean = {k: v for k, v in os.environ.items() if not k.isupper() or k in keep}
    return {**clean, "DATABASE_URL": sqlite_url(tmp_path), "LOG_FORMAT": "json", **env}


def test_serve_and_worker_refuse_at_start_up_in_one_line(tmp_path: Path) -> None:
    redis = {"QUEUE_CONNECTION": "redis", "REDIS_URL": REDIS_URL}
    cases = [
        (["serve", "--port", str(free_port())], {**redis, "ADMIN_PASSWORD": PASSWORD}, "SECRET_KEY must be set"),
        (["worker", "--processes", "1"], redis, "AI_API_BASE_URL must be set"),
    ]
    procs = [
        subprocess.Popen(
            [EXAMS, *args],
            cwd=tmp_path,
            env=_environment(tmp_path, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, env, _ in cases
    ]
    for proc, (args, _, start) in zip(procs, cases, strict=True):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (args, out, err)
        assert out == "", out
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"exams: bad setting: {start} in production (QUEUE_CONNECTION=redis)"), err


def test_allow_fake_ai_lets_serve_start_in_production(tmp_path: Path) -> None:
    port = free_port()
    env = _environment(
        tmp_path,
        QUEUE_CONNECTION="redis",
        REDIS_URL=REDIS_URL,
        SECRET_KEY=KEY,
        ADMIN_PASSWORD=PASSWORD,
        ALLOW_FAKE_AI="true",
    )
    server = Process(["serve", "--port", str(port)], env, tmp_path / "serve.log", f"http://127.0.0.1:{port}/health")
    try:
        server.start()
    finally:
        server.stop()
    assert "bad setting" not in server.log(), server.log()
