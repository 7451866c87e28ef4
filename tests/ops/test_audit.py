"""``make audit`` (``ops/audit_dependencies.py``): a finding fails, an unreachable database is said
in one line and does not fail, and nothing passes silently."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from support import REPO, free_port

SCRIPT = REPO / "ops" / "audit_dependencies.py"


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_dependencies", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_known_vulnerability_fails_naming_the_package_and_fix(audit: ModuleType) -> None:
    report = {
        "dependencies": [
            {"name": "jinja2", "version": "3.1.2", "vulns": [{"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"]}]},
            {"name": "httpx", "version": "0.28.1", "vulns": []},
        ]
    }
    code, lines = audit.verdict(report)
    assert code == 1
    assert lines == [
        "pip-audit: 1 locked package(s) with known vulnerabilities:",
        "  jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (fixed in: 3.1.3)",
    ]


def test_no_finding_says_how_many_were_audited_and_which_were_not(audit: ModuleType) -> None:
    clean = {"dependencies": [{"name": "httpx", "version": "0.28.1", "vulns": []}] * 3}
    assert audit.verdict(clean) == (0, ["pip-audit: 3 locked packages audited, no known vulnerabilities"])
    reason = "Dependency not found on PyPI and could not be audited: private-pkg (1.0)"
    partial = {"dependencies": [*clean["dependencies"], {"name": "private-pkg", "skip_reason": reason}]}
    assert audit.verdict(partial) == (
        0,
        [
            "pip-audit: 3 locked packages audited, no known vulnerabilities",
            "pip-audit: 1 could not be audited (not known to the database): private-pkg (1.0)",
        ],
    )


def test_a_database_that_knows_no_pinned_version_is_a_skip_not_a_pass(audit: ModuleType) -> None:
    reason = "Dependency not found on PyPI and could not be audited: {} (1.0)"
    report = {"dependencies": [{"name": n, "skip_reason": reason.format(n)} for n in ("a", "b")]}
    code, lines = audit.verdict(report)
    assert code == 0
    assert lines == [
        "pip-audit: skipped — vulnerability database unreachable (the index answered for none of the 2 pinned"
        " versions, e.g. a (1.0): no per-version vulnerability records there)"
    ]


def test_a_report_of_no_package_fails_rather_than_passes(audit: ModuleType) -> None:
    code, lines = audit.verdict({"dependencies": []})
    assert code == 1
    assert lines == ["pip-audit: the report lists no package at all: nothing was audited (is requirements.lock empty?)"]


def test_offline_prints_one_skipped_line_and_succeeds() -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # every HTTPS request goes to a proxy that is not there
    env = {**os.environ, "HTTPS_PROXY": closed, "https_proxy": closed}
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    assert lines[0].startswith("pip-audit: skipped — vulnerability database unreachable (https://pypi.org/"), lines


def test_pip_audit_failing_while_pypi_answers_fails(
    audit: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "requirements.lock"
    broken.write_text("this is not == a requirement ;;;\n")
    monkeypatch.setattr(audit, "LOCK", broken)
    monkeypatch.setattr(audit, "unreachable", lambda: None)
    assert audit.main() == 1
    assert "pip-audit: failed (exit 1) while PyPI answers:" in capsys.readouterr().err
