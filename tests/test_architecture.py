"""The one-way package rule of ``src/`` (docs/architecture.md), checked on the source's syntax tree.

Every ``import x`` and ``from x import y`` counts, wherever it is written: at module level, inside
a function, under ``if TYPE_CHECKING``. Two rules:

- a package imports only the packages :data:`ALLOWED` lists for it (``server``, the composition
  root, is imported by nobody);
- no import cycle between modules, within a package too. ``from pkg import name`` is an import of
  ``pkg/__init__.py``, or of the submodule ``pkg.name`` when there is one, so a package
  ``__init__`` re-exporting its private submodules is not a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: The project packages each package may import, besides itself.
ALLOWED: dict[str, frozenset[str]] = {
    "i18n": frozenset(),
    "core": frozenset({"i18n"}),
    "ai_client": frozenset({"core"}),
    "access": frozenset({"core", "i18n"}),
    "exams": frozenset({"access", "core", "i18n"}),
    "jobs": frozenset({"access", "exams", "ai_client", "core", "i18n"}),
    "admin": frozenset({"jobs", "exams", "core", "i18n"}),
    "server": frozenset({"admin", "jobs", "exams", "access", "ai_client", "core", "i18n"}),
}


@dataclass(frozen=True)
class Import:
    """One import statement of one file."""

    where: str  # "src/jobs/pipeline.py:25"
    statement: str  # as written (normalised by ast.unparse)
    module: str  # the module named, relative imports resolved: "jobs.models"
    names: tuple[str, ...]  # what ``from module import …`` takes; empty for ``import module``


def module_name(root: Path, path: Path) -> str:
    """``core.db`` for ``<root>/core/db.py``, ``core`` for ``<root>/core/__init__.py``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module under ``root`` by name."""
    return {module_name(root, path): path for path in sorted(root.rglob("*.py"))}


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    """Every import statement anywhere in ``path``."""
    name = module_name(root, path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    shown = path.relative_to(root.parent)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(f"{shown}:{node.lineno}", ast.unparse(node), alias.name, ())
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = tuple(alias.name for alias in node.names)
            yield Import(f"{shown}:{node.lineno}", ast.unparse(node), module, names)


def direction_violations(root: Path) -> list[str]:
    """One line per import that goes against :data:`ALLOWED`."""
    project = set(ALLOWED) | {name.split(".")[0] for name in modules(root)}
    problems = []
    for name, path in modules(root).items():
        owner = name.split(".")[0]
        allowed = ALLOWED.get(owner)
        if allowed is None:
            problems.append(f"{path.relative_to(root.parent)}: package {owner!r} is not in the dependency table")
            continue
        for imp in imports_of(root, path):
            target = imp.module.split(".")[0]
            if target in project and target != owner and target not in allowed:
                may = ", ".join(sorted(allowed)) or "no other package"
                problems.append(f"{imp.where}: `{imp.statement}`: {owner} may import only {may}")
    return problems


def import_graph(root: Path) -> dict[str, dict[str, Import]]:
    """Module -> the project modules it imports (each with its first import statement)."""
    known = modules(root)

    def resolve(dotted: str) -> str | None:
        parts = dotted.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in known), None)

    graph: dict[str, dict[str, Import]] = {name: {} for name in known}
    for name, path in known.items():
        for imp in imports_of(root, path):
            candidates = [f"{imp.module}.{n}" for n in imp.names] if imp.names else [imp.module]
            for candidate in candidates:
                # ``from pkg import submodule`` imports the submodule, ``from pkg import name`` pkg/__init__.
                target = candidate if candidate in known else resolve(imp.module)
                if target is not None and target != name:
                    graph[name].setdefault(target, imp)
    return graph


def _strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group: list[str] = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [group for group in groups if len(group) > 1]


def cycles(root: Path) -> list[str]:
    """One paragraph per group of modules importing each other, naming every import inside it."""
    graph = import_graph(root)
    report = []
    for group in _strongly_connected(graph):
        edges = [
            f"    {imp.where}: `{imp.statement}` ({source} -> {target})"
            for source in group
            for target, imp in sorted(graph[source].items())
            if target in group
        ]
        report.append(f"import cycle between {', '.join(group)}:\n" + "\n".join(edges))
    return report


# --- the rule, on src/ ---------------------------------------------------------------------------


def test_each_package_imports_only_the_packages_the_rule_allows() -> None:
    problems = direction_violations(SRC)
    assert not problems, "imports against the dependency rule:\n" + "\n".join(problems)


def test_no_two_modules_import_each_other() -> None:
    found = cycles(SRC)
    assert not found, "\n".join(found)


def test_the_checker_reads_the_real_source() -> None:
    graph = import_graph(SRC)
    assert set(ALLOWED) <= {name.split(".")[0] for name in graph}
    assert len(graph) > 50
    assert "ai_client" in graph["jobs.pipeline"]  # from ai_client import (...)
    assert "core.metrics" in graph["jobs.pipeline"]  # from core import metrics: a submodule
    assert "server.migrate" in graph["server.cli"]  # imported inside a function
    assert "jobs.models" in graph["server.migrations.env"]  # import jobs.models


# --- the checker catches what it must --------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "src"


def test_the_checker_reports_violations_and_cycles(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "i18n/__init__.py": "",
            "core/__init__.py": "",
            "core/settings.py": "from i18n import gettext\n",
            "core/web.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from jobs.models import Job\n",
            "ai_client/__init__.py": "from ai_client._client import AIClient\n",
            "ai_client/_client.py": "from ai_client._models import Request\nfrom core import settings\n",
            "ai_client/_models.py": "import i18n\n",
            "exams/__init__.py": "",
            "exams/a.py": "from . import b\n",
            "exams/b.py": "def grade():\n    from exams.a import thing\n",
            "jobs/__init__.py": "",
            "jobs/models.py": "def helper():\n    import server.app\n",
            "jobs/pipeline.py": "from ai_client import AIClient\nfrom exams import a\n",
            "server/__init__.py": "",
            "server/app.py": "import jobs.pipeline\nfrom core import settings\n",
        },
    )
    assert sorted(direction_violations(src)) == [
        "src/ai_client/_models.py:1: `import i18n`: ai_client may import only core",
        "src/core/web.py:4: `from jobs.models import Job`: core may import only i18n",
        "src/jobs/models.py:2: `import server.app`: jobs may import only access, ai_client, core, exams, i18n",
    ]
    assert cycles(src) == [
        "import cycle between exams.a, exams.b:\n"
        "    src/exams/a.py:1: `from . import b` (exams.a -> exams.b)\n"
        "    src/exams/b.py:2: `from exams.a import thing` (exams.b -> exams.a)"
    ]
    graph = import_graph(src)
    assert graph["jobs.pipeline"].keys() == {"ai_client", "exams.a"}
    assert graph["ai_client"].keys() == {"ai_client._client"}  # the re-export is no cycle


def test_the_checker_knows_every_package(tmp_path: Path) -> None:
    src = _tree(tmp_path, {"reports/__init__.py": "import jobs\n", "jobs/__init__.py": "import reports\n"})
    assert direction_violations(src) == [
        "src/jobs/__init__.py:1: `import reports`: jobs may import only access, ai_client, core, exams, i18n",
        "src/reports/__init__.py: package 'reports' is not in the dependency table",
    ]
