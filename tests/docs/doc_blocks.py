"""Fenced blocks of the project's Markdown pages, with where they are and how they are marked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Every page a reader gets: the README and docs/*.md.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_OPEN = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block: its page, first line (1-based, the fence's), info string and text."""

    page: Path
    line: int
    info: tuple[str, ...]
    text: str
    #: The line before the opening fence (e.g. an ``<!-- example: … -->`` marker).
    before: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def language(self) -> str:
        return self.info[0] if self.info else ""


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in order (indented ones, inside lists, included)."""
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = _OPEN.match(lines[index])
        if match is None:
            index += 1
            continue
        indent = match.group("indent")
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        found.append(
            Block(
                page=page,
                line=start + 1,
                info=tuple(match.group("info").split()),
                text="\n".join(body) + "\n" if body else "",
                before=lines[start - 1].strip() if start else "",
            )
        )
        index += 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page)]
