"""What the pages tell a reader is true of this repository.

- Every ``exams …`` command the pages show (in inline code and in shell blocks) names a command
  and options the CLI has, so a renamed command or flag breaks the build, not the reader. The
  runnable blocks (test_runnable_docs.py) run a few; this checks them all, without running them.
- The pages and the files operators copy speak in their own words: no references to documents
  a reader of this repository does not have.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from doc_blocks import PAGES, ROOT, blocks

from server.cli import main

#: Pages and shipped files a reader sees: the docs, the ops files and the student page's script.
READ_BY_PEOPLE = [
    *PAGES,
    *(ROOT / "ops").rglob("*.md"),
    *(ROOT / "ops").rglob("*.yml"),
    *(ROOT / "ops").rglob("*.conf"),
    *(ROOT / "ops").rglob("*.sh"),
    *(ROOT / "src" / "server" / "static" / "js").glob("*.js"),
    *(ROOT / "docs" / "examples").glob("*.js"),
]
_SHELL = {"bash", "sh", "shell", "console"}
_INLINE = re.compile(r"`((?:\S*/)?exams [^`]+)`")
#: Where a command ends on a shell line.
_STOP = {"|", "||", "&&", ";", "&", ">", ">>", "2>&1", "<", "\\"}


def _command_lines(page: Path) -> list[tuple[str, str, bool]]:
    """``(where, command line, inline)`` for each ``exams …`` a page shows.

    Inline code in prose may name a flag without its value (``--to``) or alternatives
    (``create|revoke``); a shell block's line is a command as typed."""
    found = []
    text = page.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        for match in _INLINE.finditer(line):
            for alternative in _alternatives(match.group(1)):
                found.append((f"{page.relative_to(ROOT)}:{number}", alternative, True))
    if page.suffix == ".md":
        shell = [block for block in blocks(page) if block.language in _SHELL]
        for block in shell:
            for offset, line in enumerate(block.text.splitlines(), 1):
                found.append((f"{page.relative_to(ROOT)}:{block.line + offset}", line, False))
    return found


def _alternatives(text: str) -> list[str]:
    """``exams tokens create|revoke`` as ``exams tokens create`` and ``exams tokens revoke``."""
    words = text.split()
    for index, word in enumerate(words):
        if "|" in word and not word.startswith("|"):
            return [" ".join([*words[:index], choice, *words[index + 1 :]]) for choice in word.split("|")]
    return [text]


def _invocation(line: str) -> list[str] | None:
    """The arguments after ``exams`` on a line that runs the CLI, or ``None``."""
    line = line.split(" #", 1)[0].strip().lstrip("$ ").replace("[", " ").replace("]", " ")
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    for index, word in enumerate(words):
        if word in _STOP:
            words = words[:index]
            break
    # Leading VAR=value assignments, then the program (exams, .venv/bin/exams, /srv/…/exams).
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    if not words or words[0].rsplit("/", 1)[-1] != "exams":
        return None
    args = words[1:]
    if not args or (args[0] not in main.commands and not args[0].startswith("-")):
        return None  # the word "exams" (the Unix user, a path) rather than the command
    return args


def _problems(args: list[str], *, inline: bool = False) -> list[str]:
    """What in ``args`` the CLI does not have: unknown commands, options, missing option values."""
    command: click.Command = main
    index = 0
    while isinstance(command, click.Group) and index < len(args) and not args[index].startswith("-"):
        sub = command.commands.get(args[index])
        if sub is None:
            return [f"no command {args[index]!r} in {command.name!r}"]
        command, index = sub, index + 1
    options = {name: param for param in command.params if isinstance(param, click.Option) for name in param.opts}
    options |= {"--help": None, "-h": None}
    problems = []
    rest = args[index:]
    while rest:
        word, rest = rest[0], rest[1:]
        if not word.startswith("-") or word == "-":
            continue
        name, has_value = word.split("=", 1)[0], "=" in word
        if name not in options:
            problems.append(f"{command.name!r} has no option {name!r}")
            continue
        param = options[name]
        if param is not None and not param.is_flag and not has_value:
            if (not rest and not inline) or (rest and rest[0].startswith("--")):
                problems.append(f"{name!r} of {command.name!r} needs a value")
            else:
                rest = rest[1:]
    return problems


def shown_commands() -> list[tuple[str, list[str], bool]]:
    found = []
    for page in [*PAGES, ROOT / "ops" / "supervisor" / "README.md", ROOT / "ops" / "supervisor" / "exams.conf"]:
        for where, line, inline in _command_lines(page):
            args = _invocation(line)
            if args is not None:
                found.append((where, args, inline))
    return found


def test_the_pages_show_many_commands() -> None:
    """The extraction finds what the pages show (a broken pattern would pass every check below)."""
    shown = shown_commands()
    assert len(shown) > 60
    seen = {args[0] for _, args, _ in shown}
    assert {"serve", "worker", "scheduler", "demo", "migrate", "jobs", "catalog", "tokens", "admin"} <= seen


@pytest.mark.parametrize(("where", "args", "inline"), shown_commands(), ids=lambda value: str(value)[:60])
def test_every_command_shown_exists(where: str, args: list[str], inline: bool) -> None:
    assert _problems(args, inline=inline) == [], f"{where}: exams {' '.join(args)}"


def test_the_checker_refuses_what_the_cli_lacks() -> None:
    assert _problems(["jobs", "list", "--status", "failed"]) == []
    assert _problems(["worker", "--processes", "2", "--threads", "16"]) == []
    assert _problems(["jobs", "lst"]) != []
    assert _problems(["worker", "--procs", "2"]) != []
    assert _problems(["jobs", "requeue", "--pending-older-than"]) != []
    assert _problems(["migrate", "--to"], inline=True) == []
    assert _alternatives("exams tokens create|revoke") == ["exams tokens create", "exams tokens revoke"]


_FOREIGN = re.compile(r"\b[Ss]eed'?s?\b(?!=)|\bSPEC(?:\.md)?\b")


@pytest.mark.parametrize("path", READ_BY_PEOPLE, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_reference_to_documents_a_reader_lacks(path: Path) -> None:
    """The pages say things in their own words (the fake AI's ``seed`` parameter is its own word)."""
    offending = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _FOREIGN.search(line.replace("`seed`", "").replace("a seed,", "").replace("with a seed", ""))
    ]
    assert offending == []
