"""The import graph of bigbird_cli and the library (core/, installed as bigbird) has no circle.

Read from the source with `ast`, so every import counts: at module level, inside functions (the lazy imports that
keep `--help` fast) and under TYPE_CHECKING. A circle among modules is what makes a call graph hard to follow (and
an import order matter); Tarjan's strongly connected components find every one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where each package's source lives: the library is core/ installed under the name bigbird.
PACKAGES = {"bigbird": ROOT / "core", "bigbird_cli": ROOT / "bigbird_cli"}


def modules() -> dict[str, Path]:
    """Every module of ours by its dotted name (a package by its own name, for its __init__.py)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = (package, *path.relative_to(folder).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that `name` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` imports that module; `from module import name` the module itself.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in known and target != name}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_the_finder_sees_both_kinds_of_import_and_a_planted_circle():
    """The check itself: it sees the lazy imports, and it reports a circle where there is one."""
    graph = import_graph()
    assert "bigbird_cli.console" in graph["bigbird_cli.errors"]  # imported inside a function or at the top
    assert "bigbird.models.attention" in graph["bigbird.models.bigbird"]
    assert "bigbird_cli.commands.summarize" in graph["bigbird_cli.commands.eval"]  # `from . import summarize`
    planted = {**graph, "bigbird_cli.console": graph["bigbird_cli.console"] | {"bigbird_cli.errors"}}
    assert ["bigbird_cli.console", "bigbird_cli.errors"] in cycles(planted)


def test_no_import_circle_in_the_cli_or_the_library():
    assert cycles(import_graph()) == []
