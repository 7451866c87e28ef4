"""``make audit``: pip-audit over ``requirements.lock``, offline-tolerant but never silent.

Runs ``pip-audit -r requirements.lock --require-hashes --disable-pip`` (the hashed lock is read
as it is: nothing is resolved or installed) against PyPI's vulnerability data, and prints one
verdict:

- a known vulnerability: each finding, exit 1;
- ``pip-audit: skipped — vulnerability database unreachable (...)``, exit 0, when PyPI cannot be
  reached, or answers for none of the pinned versions (an index or mirror without the per-version
  records pip-audit reads);
- otherwise how many packages were audited, and which ones could not be, exit 0.

A failure of pip-audit itself while PyPI answers is a failure (exit 1), never a pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
PROBE_URL = "https://pypi.org/pypi/pip/json"
TIMEOUT = 15


def _label(dependency: dict[str, Any]) -> str:
    """``name version`` (a skipped dependency carries its version only inside its ``skip_reason``)."""
    if dependency.get("version"):
        return f"{dependency['name']} {dependency['version']}"
    return str(dependency.get("skip_reason", dependency["name"])).rsplit(": ", 1)[-1]


def verdict(report: dict[str, Any]) -> tuple[int, list[str]]:
    """Exit code and lines to print for a pip-audit JSON report (``--format json``)."""
    dependencies = report.get("dependencies", [])
    found = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    audited = len(dependencies) - len(skipped)
    if not dependencies:
        return 1, ["pip-audit: the report lists no package at all: nothing was audited (is requirements.lock empty?)"]
    if found:
        lines = [f"pip-audit: {len(found)} locked package(s) with known vulnerabilities:"]
        for dep in found:
            for vuln in dep["vulns"]:
                fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
                lines.append(f"  {_label(dep)}: {vuln.get('id', '?')} (fixed in: {fixed})")
        return 1, lines
    if audited == 0:
        reason = (
            f"the index answered for none of the {len(skipped)} pinned versions, e.g. {_label(skipped[0])}: "
            "no per-version vulnerability records there"
        )
        return 0, [f"pip-audit: skipped — vulnerability database unreachable ({reason})"]
    lines = [f"pip-audit: {audited} locked packages audited, no known vulnerabilities"]
    if skipped:
        names = ", ".join(_label(d) for d in skipped)
        lines.append(f"pip-audit: {len(skipped)} could not be audited (not known to the database): {names}")
    return 0, lines


def unreachable() -> str | None:
    """Why PyPI cannot be reached from here (``None`` when it answers)."""
    try:
        with urllib.request.urlopen(PROBE_URL, timeout=TIMEOUT) as response:
            response.read(1)
    except (urllib.error.URLError, OSError) as exc:
        return f"{PROBE_URL}: {getattr(exc, 'reason', exc)}"
    return None


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pip_audit",
            "--requirement",
            str(LOCK),
            "--require-hashes",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "--timeout",
            str(TIMEOUT),
            "--format",
            "json",
            "--output",
            str(output),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603  (fixed arguments)
        report = json.loads(output.read_text()) if output.is_file() and output.stat().st_size else None
    if report is None:
        why = unreachable()
        if why is not None:
            print(f"pip-audit: skipped — vulnerability database unreachable ({why})")
            return 0
        print(f"pip-audit: failed (exit {done.returncode}) while PyPI answers:", file=sys.stderr)
        print("\n".join(done.stderr.strip().splitlines()[-15:]), file=sys.stderr)
        return 1
    code, lines = verdict(report)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main())
