"""The package's import structure: no import circle between modules, and no package importing one
from a later layer (docs/architecture.md draws the layers).

Every ``import`` counts, the ones inside functions too (a lazy import still ties two modules:
it only moves the failure to run time). Read from the source with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "cervicontour"

#: The layers, bottom first. A package (``cervicontour.<name>``, or a top-level module) may import
#: its own layer's and earlier layers' packages only. docs/architecture.md says what each one owns.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cervicontour", "errors", "volume", "structures", "boxes", "progress", "cli_common"),
    ("structure_set",),
    ("io",),
    ("cohort",),
    ("rules", "synth", "preprocess", "contours", "metrics"),
    ("validate",),
    ("models", "networks"),
    ("export",),
    ("inference",),
    ("report",),
    ("training",),
    ("baselines",),
    ("review",),
    ("cli",),
)


def module_names(src: Path = SRC) -> dict[str, Path]:
    found = {}
    for path in (src / ROOT).rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imported(module: str, path: Path, node: ast.AST, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    else:
        return []
    out = []
    for name in names:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name.split(".")[0] == ROOT:
            out.append(name)
    return out


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module → the package modules it imports (anywhere in its body)."""
    modules = module_names(src)
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            deps.update(_imported(name, path, node, known))
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_of() -> dict[str, int]:
    return {name: number for number, names in enumerate(LAYERS) for name in names}


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}, "f": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["e", "e2"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_reader_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / ROOT / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / ROOT / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .one import x\n")
    (pkg / "one.py").write_text("def f():\n    from cervicontour.sub import two\n")
    (pkg / "two.py").write_text("import cervicontour.sub.one\n")
    graph = import_graph(tmp_path)
    assert graph[f"{ROOT}.sub.one"] == {f"{ROOT}.sub.two"}
    assert graph[f"{ROOT}.sub.two"] == {f"{ROOT}.sub.one"}
    assert graph[f"{ROOT}.sub"] == {f"{ROOT}.sub.one"}
    assert [f"{ROOT}.sub.one", f"{ROOT}.sub.two"] in cycles(graph)


def test_no_import_circle_between_modules():
    graph = import_graph()
    found = cycles(graph)
    described = ["; ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a] & set(c))) for c in found]
    assert not found, "import circles (move what both need into a module below them):\n" + "\n".join(described)


def test_every_package_imports_only_its_own_or_earlier_layers():
    graph = import_graph()
    layers = layer_of()
    packages = {package_of(m) for m in graph}
    assert not packages - set(layers), f"packages missing from LAYERS (place them; docs/architecture.md): {sorted(packages - set(layers))}"
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                    if layers[package_of(d)] > layers[package_of(m)])  # fmt: skip
    assert not upward, "imports from a later layer:\n" + "\n".join(upward)


def test_every_layer_entry_is_a_package_or_module_of_the_source():
    present = {package_of(m) for m in module_names()}
    stale = sorted(set(layer_of()) - present)
    assert not stale, f"LAYERS names what the source no longer has: {stale}"


#: issue 23: a module a maintainer can read whole; a command module that only parses and calls
MODULE_MAX_LINES, CLI_MODULE_MAX_LINES = 400, 150


def test_no_module_is_longer_than_a_maintainer_reads_at_once():
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in module_names().items()}
    long = sorted(f"{n}: {k} lines" for n, k in lengths.items() if k > MODULE_MAX_LINES)
    assert not long, f"modules over {MODULE_MAX_LINES} lines (split by what each part owns):\n" + "\n".join(long)
    cli = sorted(f"{n}: {k} lines" for n, k in lengths.items() if n.startswith(f"{ROOT}.cli.") and k > CLI_MODULE_MAX_LINES)
    assert not cli, f"cli modules over {CLI_MODULE_MAX_LINES} lines (move the work into the library):\n" + "\n".join(cli)
