"""Code the docs quote is the code the tests run, and the docs' PromQL parses.

- A fenced block right after ``<!-- example: PATH -->`` must be the file PATH, byte for byte
  (docs/examples/*.js are run in Chromium by tests/e2e/test_client_examples.py), and every file
  in docs/examples is quoted somewhere.
- Every ``promql`` block (one expression per line; an indented line continues the one above) is
  parsed by ``promtool check rules`` as recording rules of a generated rules file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from doc_blocks import ROOT, Block, all_blocks

EXAMPLES = ROOT / "docs" / "examples"
_MARKER = re.compile(r"^<!-- example: (?P<path>\S+) -->$")


def quoted() -> list[tuple[Block, Path]]:
    pairs = []
    for block in all_blocks():
        match = _MARKER.match(block.before)
        if match:
            pairs.append((block, ROOT / match.group("path")))
    return pairs


def test_quoted_examples_are_the_tested_files() -> None:
    pairs = quoted()
    assert pairs, "no <!-- example: … --> marker in the docs"
    for block, path in pairs:
        assert path.is_file(), f"{block.where} quotes {path}, which does not exist"
        assert block.text == path.read_text(encoding="utf-8"), (
            f"{block.where} differs from {path.relative_to(ROOT)}: paste the file into the docs again"
        )


def test_every_example_file_is_quoted() -> None:
    files = {path.resolve() for path in EXAMPLES.glob("*.js")}
    assert files, "docs/examples has no example"
    assert files <= {path.resolve() for _, path in quoted()}


def promql_expressions() -> list[tuple[str, str]]:
    """(where, expression) of each expression in the docs' ``promql`` blocks."""
    found: list[tuple[str, str]] = []
    for block in all_blocks():
        if block.language != "promql":
            continue
        current: list[str] = []
        for line in [*block.text.splitlines(), ""]:
            if line.startswith((" ", "\t")) and current:
                current.append(line.strip())
                continue
            if current:
                found.append((block.where, " ".join(current)))
                current = []
            if line.strip() and not line.startswith("#"):
                current = [line.strip()]
    return found


def test_promql_in_the_docs_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make system-deps` (Debian package prometheus)")
    expressions = promql_expressions()
    assert len(expressions) >= 10, expressions
    rules = [{"record": f"docs:expression_{i}", "expr": expr} for i, (_, expr) in enumerate(expressions)]
    path = tmp_path / "docs-promql.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "docs", "rules": rules}]}), encoding="utf-8")
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n" + "\n".join(f"{w}: {e}" for w, e in expressions)
