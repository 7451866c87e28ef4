"""The docs' examples marked runnable run against a live demo, so a renamed flag, route or field
breaks the build instead of the reader.

What runs (written in each page, checked here):

- A fenced shell block whose info string says ``runnable`` (```` ```bash runnable ````), in
  ``README.md`` and ``docs/*.md``, runs with ``bash -euo pipefail`` in the directory of a live
  ``exams demo`` (its SQLite database in ``./var``, the built-in fake AI answering in 3 s), as a
  reader would run it in a second terminal: ``exams`` is the project's command, ``localhost:8000``
  and ``127.0.0.1:8000`` are the demo's address (also in ``$BASE``), and ``curl`` fails on an
  HTTP error (``--fail-with-body``). Blocks are self-contained; they run in page order.
- A block that shows an HTTP exchange's answer right after a runnable block (```` ```http ````,
  starting ``HTTP/1.1 <status>``) is that block's expected output (``curl -si``): the status, every
  header shown, and the JSON body's fields must match, recursively. A value written with ``…`` (or
  a header value with ``…``) stands for "any"; every other value must be equal.

``RUNNABLE`` lists how many runnable blocks each page has, so a marker that disappears is noticed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from doc_blocks import ROOT, Block, all_blocks

from support import EXAMS, free_port, wait_http

#: Runnable blocks per page (relative path): add one here when you mark one in the docs.
RUNNABLE = {
    "README.md": 1,
    "docs/async-processing.md": 6,
    "docs/deployment.md": 2,
    "docs/monitoring.md": 2,
}
SHELLS = {"bash", "sh", "shell"}
PLACEHOLDER = "…"
CURL_FAILS_ON_HTTP_ERRORS = 'curl() { command curl --fail-with-body --show-error "$@"; }\n'


def runnable_blocks() -> list[tuple[Block, Block | None]]:
    """Each runnable shell block and the expected HTTP answer that follows it, if any."""
    blocks = all_blocks()
    found = []
    for index, block in enumerate(blocks):
        if block.language in SHELLS and "runnable" in block.info:
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            expected = (
                following
                if following is not None
                and following.page == block.page
                and following.language == "http"
                and following.text.startswith("HTTP/")
                else None
            )
            found.append((block, expected))
    return found


class Demo:
    """``exams demo`` in a directory of its own, with nothing of this machine's settings."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            "PATH": f"{Path(EXAMS).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(directory),
            "LANG": "C.UTF-8",
            "BASE": self.base,
        }
        self.log = directory / "demo.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Demo:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [EXAMS, "demo", "--port", str(self.port)],
                cwd=self.directory,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_http(f"{self.base}/health", timeout=60, proc=self.proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- demo log ---\n{self.log.read_text(errors='replace')[-3000:]}") from exc
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def run(self, block: Block, *, fail_on_http_errors: bool) -> subprocess.CompletedProcess[str]:
        script = re.sub(r"\b(?:localhost|127\.0\.0\.1):8000\b", f"127.0.0.1:{self.port}", block.text)
        prelude = CURL_FAILS_ON_HTTP_ERRORS if fail_on_http_errors else ""
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", prelude + script],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = Demo(tmp_path_factory.mktemp("demo")).start()
    yield running
    running.stop()


def parse_http(text: str) -> tuple[int, dict[str, str], str]:
    """Status, headers (lower-cased names) and body of one HTTP answer as ``curl -si`` prints it."""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    status_line, *header_lines = head.splitlines()
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body.strip()


def mismatches(documented: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` differs from the documented value (``…`` in a string: any value)."""
    where = path or "the body"
    if isinstance(documented, str) and PLACEHOLDER in documented:
        return [] if actual is not None else [f"{where}: documented {documented!r}, got null"]
    if isinstance(documented, dict):
        if not isinstance(actual, dict):
            return [f"{where}: documented an object, got {actual!r}"]
        problems = [f"{where}: documents {key!r}, which the answer lacks" for key in documented.keys() - actual.keys()]
        problems += [
            f"{where}: the answer has {key!r}, which is not documented" for key in actual.keys() - documented.keys()
        ]
        for key in documented.keys() & actual.keys():
            problems += mismatches(documented[key], actual[key], f"{path}.{key}" if path else key)
        return problems
    if isinstance(documented, list):
        if not isinstance(actual, list) or len(actual) < len(documented):
            return [f"{where}: documented {documented!r}, got {actual!r}"]
        return [p for i, item in enumerate(documented) for p in mismatches(item, actual[i], f"{where}[{i}]")]
    return [] if documented == actual else [f"{where}: documented {documented!r}, got {actual!r}"]


def test_the_docs_mark_what_runs() -> None:
    counts: dict[str, int] = {}
    for block, _ in runnable_blocks():
        page = str(block.page.relative_to(ROOT))
        counts[page] = counts.get(page, 0) + 1
    assert counts == RUNNABLE


def test_expected_answers_are_valid_json() -> None:
    for block, expected in runnable_blocks():
        if expected is not None:
            _status, _headers, body = parse_http(expected.text)
            if body:
                json.loads(body)  # the documented body must be JSON to be compared
            assert block.text.count("curl ") == 1, f"{block.where}: one request per block with an expected answer"


@pytest.mark.parametrize(
    ("block", "expected"), runnable_blocks(), ids=lambda b: b.where if isinstance(b, Block) else ""
)
def test_runnable_block_runs_on_the_demo(demo: Demo, block: Block, expected: Block | None) -> None:
    result = demo.run(block, fail_on_http_errors=expected is None)
    assert result.returncode == 0, (
        f"{block.where} failed ({result.returncode}):\n{block.text}\n--- stdout ---\n{result.stdout[-2000:]}"
        f"\n--- stderr ---\n{result.stderr[-2000:]}"
    )
    if expected is None:
        return
    want_status, want_headers, want_body = parse_http(expected.text)
    status, headers, body = parse_http(result.stdout)
    assert status == want_status, f"{block.where}: documented {want_status}, got {status}\n{result.stdout}"
    for name, value in want_headers.items():
        assert name in headers, f"{expected.where}: documents the header {name}, which the answer lacks"
        if PLACEHOLDER not in value:
            assert headers[name] == value, f"{expected.where}: {name}: documented {value!r}, got {headers[name]!r}"
    if want_body:
        problems = mismatches(json.loads(want_body), json.loads(body))
        assert not problems, f"{expected.where} differs from the real answer:\n" + "\n".join(problems)
