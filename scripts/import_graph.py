"""Which way the project's imports point, so a change that makes a low module lean on a high one shows up.

Layers, lowest first (a module may import its own layer and any layer below it):

  0  core.i18n, core.resources, core.processes, core.errors,  words, paths, processes, the error kinds,
     core.registry                                             finding plug-in modules
  1  core.files, core.ownership, core.runs, core.feedback      what lies on disk: markers, owners, run folders
  2  core.data                                                 datasets: reading, formats, templates, caches
  3  core.models                                               model files: demo, conversion, loading
  4  core.methods, core.stages                                 the two registries (how to tune, what to tune for)
  5  core.config, core.suggest                                 RunConfig asks both registries; suggestions too
  6  core.training, core.estimate                              running a config, and what it will cost
  7  core.chat, core.evaluation, core.export, core.access      using a finished run
  8  core.workbench, core.api, core.cli                        the facade and the entry points
  9  webui                                                     Gradio on top of the facade

It prints the upward imports (a lower layer importing a higher one), the two-way ties between folders (units
above: a top-level module or a package under core/), the import circles between modules (imports in functions
count: they still tie the modules together), and how many project imports sit inside functions. Imports under
`if TYPE_CHECKING:` are skipped (they never run). Standard library only: `python scripts/import_graph.py`.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "webui")
LAYERS: tuple[tuple[str, ...], ...] = (
    # "core": its empty __init__.py
    ("core", "core.i18n", "core.resources", "core.processes", "core.errors", "core.registry"),
    ("core.files", "core.ownership", "core.runs", "core.feedback"),
    ("core.data",),
    ("core.models",),
    ("core.methods", "core.stages"),
    ("core.config", "core.suggest"),
    ("core.training", "core.estimate"),
    ("core.chat", "core.evaluation", "core.export", "core.access"),
    ("core.workbench", "core.api", "core.cli"),
    ("webui",),
)
LAYER = {unit: number for number, units in enumerate(LAYERS) for unit in units}


def module_names() -> dict[str, Path]:
    """Every project module by its dotted name (a package by its own name, from its __init__.py)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def unit_of(module: str) -> str:
    """The layer unit a module belongs to: webui, a package under core/, or a top-level core module."""
    parts = module.split(".")
    return "webui" if parts[0] == "webui" else ".".join(parts[:2])


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module):
    """(import node, inside a function) for every import that can run."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                stack.extend((other, in_function) for other in child.orelse)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            stack.append((child, inner))


def targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path]) -> set[str]:
    """The project modules one import statement loads (a name that is a submodule counts as that module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    out = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name.split(".")[0] in PACKAGES:
            out.add(name)
    return out


def graph() -> tuple[dict[str, set[str]], int, list[str]]:
    """Module -> modules it imports, the number of project import statements inside functions, and where they are."""
    known = module_names()
    edges: dict[str, set[str]] = defaultdict(set)
    in_function: list[str] = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, nested in _imports(tree):
            found = targets(node, module, path.name == "__init__.py", known) - {module}
            edges[module] |= found
            if nested and found:
                in_function.append(f"{path.relative_to(ROOT)}:{node.lineno} -> {', '.join(sorted(found))}")
    return edges, len(in_function), sorted(in_function)


def upward(edges: dict[str, set[str]]) -> list[str]:
    lines = []
    for source, found in sorted(edges.items()):
        for target in sorted(found):
            low, high = LAYER[unit_of(source)], LAYER[unit_of(target)]
            if high > low:
                lines.append(f"{source} (layer {low}) -> {target} (layer {high})")
    return lines


def ties(edges: dict[str, set[str]]) -> list[str]:
    units: dict[str, set[str]] = defaultdict(set)
    for source, found in edges.items():
        units[unit_of(source)] |= {unit_of(target) for target in found} - {unit_of(source)}
    return sorted(f"{a} <-> {b}" for a in units for b in units[a] if a < b and a in units.get(b, ()))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def main(argv: list[str]) -> int:
    edges, nested, where = graph()
    up, tied, circled = upward(edges), ties(edges), circles(edges)
    print(f"upward imports: {len(up)}")
    print("".join(f"  {line}\n" for line in up), end="")
    print(f"two-way ties between folders: {len(tied)}")
    print("".join(f"  {line}\n" for line in tied), end="")
    print(f"import circles: {len(circled)}")
    print("".join(f"  {' <-> '.join(group)}\n" for group in circled), end="")
    print(f"project imports inside functions: {nested}")
    if "-v" in argv:
        print("".join(f"  {line}\n" for line in where), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
