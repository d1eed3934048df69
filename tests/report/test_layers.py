"""The import graph: no cycles, and the report pipeline flows one way.

    load -> deltas -> findings -> ledger -> who -> advice -> build -> render_json -> render_html -> history
         -> pipeline -> report / compare / check / fix -> trend -> cli

A module imports only modules before it in that order (imports inside functions count too), plus the
leaves any step may use: knowledge_base (what counters and reasons mean), formatting (numbers for
people), commands (sub-command plumbing) and the package itself (its version). Renderers (report.html,
the report.json writer, compare, check) read the built report: they never import findings or deltas;
pipeline runs the builder's steps and the renderers over slices of a large fleet for `report`.
history (the run history: an index of built reports) and trend (which reads it, with compare's rule) are
renderers too.
The collection's plugins (module_utils and modules) must have no import cycle either.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "report" / "dropscope"
PLUGINS = REPO / "collections" / "ansible_collections" / "dropscope" / "drops" / "plugins"
PLUGINS_PREFIX = "ansible_collections.dropscope.drops.plugins"

PIPELINE = (
    "load", "deltas", "findings", "ledger", "who", "advice", "cohorts", "build", "render_json", "render_html",
    "history", "pipeline", "report", "compare", "check", "fix", "trend", "cli", "__main__",
)
LEAVES = ("dropscope", "knowledge_base", "formatting", "commands", "sampling")
RENDERERS = ("render_json", "render_html", "history", "report", "compare", "check", "fix", "trend")
RENDERERS_MAY_IMPORT = {"build", "load", "render_json", "render_html", "history", "pipeline", "compare", *LEAVES}
# compare: trend uses its rule; pipeline: report streams the builder and the renderers through it
SAME_STEP = {("report", "compare"), ("report", "check"), ("compare", "check"), ("fix", "report"), ("fix", "compare"),
             ("fix", "check")}  # siblings: neither imports the other


def _module_name(path: Path, root: Path, prefix: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([prefix, *parts]) if parts else prefix


def import_graph(root: Path, prefix: str) -> dict[str, set[str]]:
    """module → the modules of the same tree it imports (anywhere in the file), by dotted name under PREFIX."""
    modules = {_module_name(path, root, prefix): path for path in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None (depth-first search; the order is deterministic)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer_violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Imports that go against the pipeline's order, leaves that import the pipeline, renderers that reach
    into findings or deltas, and modules that are neither in the pipeline nor leaves."""
    problems = []
    for name, targets in graph.items():
        module = name.removeprefix("dropscope.")
        if module not in PIPELINE and module not in LEAVES:
            problems.append(f"{module}: not placed in the pipeline (add it to PIPELINE or LEAVES)")
            continue
        for target in sorted(t.removeprefix("dropscope.") for t in targets):
            if target in LEAVES:
                continue
            if module in LEAVES:
                problems.append(f"{module} is a leaf but imports {target}")
            elif (module, target) in SAME_STEP or (target, module) in SAME_STEP:
                problems.append(f"{module} imports its sibling {target}")
            elif target in PIPELINE and PIPELINE.index(target) >= PIPELINE.index(module):
                problems.append(f"{module} imports {target}, which comes after it")
            if module in RENDERERS and target not in RENDERERS_MAY_IMPORT:
                problems.append(f"renderer {module} imports {target} (renderers read the built report only)")
    return problems


def test_the_report_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE, "dropscope")
    assert "dropscope.build" in graph and "dropscope.findings" in graph["dropscope.build"]
    assert find_cycle(graph) is None


def test_the_report_pipeline_flows_one_way() -> None:
    assert layer_violations(import_graph(PACKAGE, "dropscope")) == []


def test_the_collection_plugins_have_no_import_cycle() -> None:
    graph = import_graph(PLUGINS, PLUGINS_PREFIX)
    module_utils = f"{PLUGINS_PREFIX}.module_utils"
    assert any(target.startswith(module_utils) for targets in graph.values() for target in targets)
    assert find_cycle(graph) is None


def test_a_cycle_and_a_wrong_way_import_are_caught(tmp_path: Path) -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None

    # A tiny package where model and findings import each other (one of them inside a function).
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text("def build():\n    from pkg.findings import add\n    return add\n")
    (package / "findings.py").write_text("from pkg import model\n")
    (package / "render.py").write_text("from .findings import *\n")
    graph = import_graph(package, "pkg")
    assert graph == {"pkg": set(), "pkg.model": {"pkg.findings"}, "pkg.findings": {"pkg", "pkg.model"},
                     "pkg.render": {"pkg.findings"}}  # fmt: skip
    assert find_cycle(graph) == ["pkg.findings", "pkg.model", "pkg.findings"]


@pytest.mark.parametrize(
    ("graph", "problem"),
    [
        ({"dropscope.findings": {"dropscope.build"}}, "findings imports build, which comes after it"),
        ({"dropscope.check": {"dropscope.findings"}}, "renderer check imports findings"),
        ({"dropscope.render_html": {"dropscope.deltas"}}, "renderer render_html imports deltas"),
        ({"dropscope.compare": {"dropscope.check"}}, "compare imports its sibling check"),
        ({"dropscope.formatting": {"dropscope.load"}}, "formatting is a leaf but imports load"),
        ({"dropscope.model": set()}, "model: not placed in the pipeline"),
    ],
)
def test_layer_violations_are_named(graph: dict[str, set[str]], problem: str) -> None:
    assert any(found.startswith(problem) for found in layer_violations(graph)), layer_violations(graph)
