"""docs/architecture.md's import graph is the real one, and the layering it states holds.

The graph is read from the source (every `import lmforge.X` / `from lmforge.X import`, inside functions too: a lazy
import is still a dependency). After a change that adds or removes an edge, print the new block with
`python tests/test_architecture.py` and paste it into docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "lmforge"
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- import graph: begin -->", "<!-- import graph: end -->"

BASE = {"errors", "fileio", "runtime", "lazy"}  # imported by everyone, import nothing but each other
FOUNDATIONS = {"plan", "files", "data", "hub"}  # shared by the capabilities; never import one
CAPABILITIES = {"train", "evaluate", "generate", "serve", "compress", "quickstart", "ui"}


def _unit(path: Path) -> str:
    """The package (or top-level module) of lmforge a source file belongs to."""
    return path.relative_to(SOURCE).parts[0].removesuffix(".py")


def import_graph() -> dict[str, set[str]]:
    """unit -> the other lmforge units it imports."""
    units = {_unit(path) for path in SOURCE.rglob("*.py")}
    graph: dict[str, set[str]] = {unit: set() for unit in units}
    for path in SOURCE.rglob("*.py"):
        here = _unit(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] if node.module != "lmforge" else [f"lmforge.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "lmforge" and len(parts) > 1 and parts[1] in units and parts[1] != here:
                    graph[here].add(parts[1])
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of units that import each other, directly or around a loop (strongly connected, > 1 unit)."""

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    reach = {unit: reaches(unit) for unit in graph}
    groups = {frozenset({unit} | {other for other in reach[unit] if unit in reach[other]}) for unit in graph}
    return sorted(sorted(group) for group in groups if len(group) > 1)


def render(graph: dict[str, set[str]]) -> str:
    lines = [
        f"{unit:<11} -> {', '.join(sorted(graph[unit])) or '(nothing)'}"
        for unit in sorted(graph)
        if not unit.startswith("__")
    ]
    loops = ["; ".join(" <-> ".join(group) for group in cycles(graph)) or "none"]
    return "\n".join([BEGIN, "```", *lines, "```", f"Import cycles: {loops[0]}.", END])


def _documented() -> str:
    text = DOC.read_text(encoding="utf-8")
    return text[text.index(BEGIN) : text.index(END) + len(END)]


def test_the_documented_import_graph_is_the_real_one():
    assert _documented() == render(import_graph()), "regenerate: python tests/test_architecture.py"


def test_only_the_entry_points_import_the_cli():
    graph = import_graph()
    assert {unit for unit, targets in graph.items() if "cli" in targets} <= {"__main__"}


def test_foundations_and_base_modules_never_import_a_capability():
    graph = import_graph()
    for unit in FOUNDATIONS | BASE:
        assert not graph[unit] & (CAPABILITIES | {"cli"}), f"{unit} imports {graph[unit] & CAPABILITIES}"
    for unit in BASE:
        assert graph[unit] <= BASE, f"{unit} imports {graph[unit] - BASE}"


def test_no_import_cycle_and_the_foundations_stack_plan_files_hub():
    """plan is pure, files reads local files (asking plan for counts), hub resolves references above both."""
    graph = import_graph()
    assert cycles(graph) == []
    assert not graph["plan"] & {"files", "hub", "data"}, graph["plan"]
    assert "hub" not in graph["files"], "files takes local paths: resolve a reference with hub.locate_model first"


if __name__ == "__main__":
    print(render(import_graph()))
