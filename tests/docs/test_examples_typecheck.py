"""The documented client examples type-check: ``tsc`` (strict) over docs/examples/*.js and their JSDoc.

TypeScript and ``@types/react`` are the versions ``docs/examples/package-lock.json`` pins,
installed by ``npm ci`` into ``docs/examples/node_modules`` (git-ignored) when that is missing or
older than the lock; otherwise the test only runs ``tsc`` (a few seconds). Node.js and npm must be
installed (Debian/NodeSource package ``nodejs``).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from doc_blocks import ROOT

EXAMPLES = ROOT / "docs" / "examples"
LOCK = EXAMPLES / "package-lock.json"
#: npm ci writes this copy of the lock last: older than the lock (or absent) means reinstall.
INSTALLED = EXAMPLES / "node_modules" / ".package-lock.json"
TSC = EXAMPLES / "node_modules" / ".bin" / "tsc"


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=EXAMPLES, capture_output=True, text=True, timeout=timeout, check=False)


def _install() -> None:
    """``npm ci`` from the lock, unless node_modules already holds it."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: the examples' type-check needs Node.js and npm (package nodejs)")
    if TSC.exists() and INSTALLED.exists() and INSTALLED.stat().st_mtime >= LOCK.stat().st_mtime:
        return
    npm = shutil.which("npm")
    assert npm is not None
    proc = _run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], timeout=240)
    assert proc.returncode == 0, f"npm ci in {EXAMPLES.relative_to(ROOT)} failed:\n{proc.stdout}{proc.stderr}"


def test_client_examples_type_check() -> None:
    _install()
    proc = _run([str(TSC), "-p", "tsconfig.json", "--pretty", "false"], timeout=120)
    assert proc.returncode == 0, f"tsc -p docs/examples/tsconfig.json:\n{proc.stdout}{proc.stderr}"
