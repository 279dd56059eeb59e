"""The import layers of ``foundation``: one way down, no circles.

Every module of ``src/foundation`` (``.py``, and the Cython binding's
``.pyx``/``.pyi``) is read with :mod:`ast`, not imported, so every import
counts: module level, inside functions (lazy imports), and under ``if
TYPE_CHECKING:`` (type-only). Relative imports are resolved. Importing
``foundation.a.b`` from outside package ``foundation.a`` also runs
``foundation/a/__init__.py``, so it counts as an import of that package too.

The layers, lowest first (a module imports only from its own layer or
below)::

    _util < errors < telemetry < _endpoints < config    (the floor, one module each)
      < etcd < registry < supervision < coordination < cluster
      < demo, _cli (and __main__)                       (the top: not the library)

The floor is ordered module by module: ``_util`` imports nothing of the
package (``errors`` uses its owner wording), ``errors`` and ``telemetry``
only what is below them, ``_endpoints``
(the etcd endpoint check, shared by ``config`` and the etcd transport) and
``config`` take their errors from ``errors``.

``foundation/__init__.py`` re-exports the layers and sits above all of them:
only the top layer (the demo and the command line, users of the public API)
may import it, and it must not import ``cluster`` (so ``import foundation``
needs neither grpcio nor a running etcd). There is no
exceptions list: a new module belongs to a layer by its path, or this test
names it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import foundation

SRC = Path(foundation.__file__).resolve().parent
ROOT = "foundation"

#: The layers, lowest first; a module's layer is the first whose prefix matches
#: its name (``foundation.etcd`` matches ``foundation.etcd`` and
#: ``foundation.etcd._client``, not ``foundation.etcdx``).
LAYERS: list[tuple[str, ...]] = [
    ("foundation._util",),
    ("foundation.errors",),
    ("foundation.telemetry",),
    ("foundation._endpoints",),
    ("foundation.config",),
    ("foundation.etcd",),
    ("foundation.registry",),
    ("foundation.supervision",),
    ("foundation.coordination",),
    ("foundation.cluster",),
    ("foundation.demo", "foundation._cli", "foundation.__main__"),
]
#: Above every layer: the package itself (it re-exports them).
TOP = len(LAYERS)


def layer_of(module: str) -> int | None:
    if module == ROOT:
        return TOP
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                return rank
    return None


def layer_name(rank: int | None) -> str:
    if rank is None:
        return "no layer"
    if rank == TOP:
        return "the package's __init__"
    return "/".join(p.removeprefix("foundation.") for p in LAYERS[rank])


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    how: str  # "module", "lazy", "type-only"; "+package" when implied

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}, {self.how})"


def _module_files() -> dict[str, list[Path]]:
    modules: dict[str, list[Path]] = {}
    for path in sorted(SRC.rglob("*")):
        if path.suffix not in (".py", ".pyx", ".pyi") or "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules.setdefault(".".join(parts), []).append(path)
    return modules


MODULE_FILES = _module_files()
MODULES = set(MODULE_FILES)


def _is_package(module: str) -> bool:
    return any(p.stem == "__init__" for p in MODULE_FILES.get(module, ()))


def _resolve(module: str, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` in ``module``."""
    if level == 0:
        return target or ""
    parts = module.split(".")
    if not _is_package(module):
        parts.pop()
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, target] if target else parts)


def _known(name: str) -> str | None:
    """The package module ``name`` refers to (its longest known prefix), if any."""
    if name != ROOT and not name.startswith(ROOT + "."):
        return None
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import node under ``tree`` with how it runs (module, lazy, type-only)."""

    def walk(node: ast.AST, how: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, how
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), "type-only")
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), how)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(child, "type-only" if how == "type-only" else "lazy")
            else:
                yield from walk(child, how)

    yield from walk(tree, "module")


# Cython cannot be parsed by ast: its Python-level imports are plain lines.
_PYX_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(?P<from>[.\w]+)[ \t]+import[ \t]+(?P<names>\([^)]*\)|[^\n#]*)"
    r"|import[ \t]+(?P<mods>[^\n#]*))",
    re.MULTILINE,
)


def _targets(module: str, path: Path) -> Iterator[tuple[str, int, str]]:
    """(imported name, line, how) for every import in ``path``."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".pyx":
        for match in _PYX_IMPORT.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            how = "module" if not match.group(0)[:1].isspace() else "lazy"
            if match.group("mods") is not None:
                for alias in match.group("mods").split(","):
                    yield alias.split(" as ")[0].strip(), line, how
                continue
            base = match.group("from")
            level = len(base) - len(base.lstrip("."))
            absolute = _resolve(module, level, base[level:] or None)
            for alias in match.group("names").strip("()").split(","):
                sub = f"{absolute}.{alias.split(' as ')[0].strip()}"
                yield (sub if sub in MODULES else absolute), line, how
        return
    tree = ast.parse(text, filename=str(path))
    for node, how in _imports(tree):
        if path.suffix == ".pyi":
            how = "type-only"
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, how
            continue
        absolute = _resolve(module, node.level, node.module)
        for alias in node.names:
            # ``from pkg import sub`` imports the submodule when there is one,
            # else a name of ``pkg`` itself.
            sub = f"{absolute}.{alias.name}"
            yield (sub if sub in MODULES else absolute), node.lineno, how


def _edges() -> list[Edge]:
    edges: dict[tuple[str, str], Edge] = {}
    order = {"module": 0, "lazy": 1, "type-only": 2}

    def add(edge: Edge) -> None:
        if edge.source == edge.target:
            return
        old = edges.get((edge.source, edge.target))
        if old is None or order.get(edge.how, 3) < order.get(old.how, 3):
            edges[edge.source, edge.target] = edge

    for module, paths in MODULE_FILES.items():
        for path in paths:
            for name, line, how in _targets(module, path):
                target = _known(name)
                if target is None:
                    continue
                add(Edge(module, target, line, how))
                # Importing foundation.a.b from outside foundation.a runs its __init__.
                parts = target.split(".")[:-1]
                while len(parts) > 1:
                    package = ".".join(parts)
                    if not (module == package or module.startswith(package + ".")):
                        add(Edge(module, package, line, how + "+package"))
                    parts.pop()
    return sorted(edges.values(), key=lambda e: (e.source, e.target))


EDGES = _edges()


def _cycles(edges: Iterable[Edge]) -> list[list[Edge]]:
    """One concrete cycle per strongly connected component of more than one module."""
    graph: dict[str, list[Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(node: str) -> None:  # Tarjan, iterative
        work = [(node, iter(graph.get(node, ())))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            for edge in children:
                nxt = edge.target
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph.get(nxt, ()))))
                    break
                if nxt in on_stack:
                    low[current] = min(low[current], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[current])
                if low[current] == index[current]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == current:
                            break
                    if len(component) > 1:
                        components.append(component)

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)

    cycles = []
    for component in components:
        start = min(component)
        # Shortest path back to start, within the component (breadth first).
        paths: dict[str, list[Edge]] = {start: []}
        frontier = [start]
        found: list[Edge] | None = None
        while frontier and found is None:
            following = []
            for node in frontier:
                for edge in graph.get(node, ()):
                    if edge.target not in component:
                        continue
                    if edge.target == start:
                        found = [*paths[node], edge]
                        break
                    if edge.target not in paths:
                        paths[edge.target] = [*paths[node], edge]
                        following.append(edge.target)
                if found is not None:
                    break
            frontier = following
        assert found is not None
        cycles.append(found)
    return cycles


def test_modules_and_edges_found() -> None:
    # The walk itself works: it sees the modules and the kinds of import.
    assert {"foundation", "foundation.errors", "foundation.registry._facade"} <= MODULES
    assert "foundation.registry._native" in MODULES  # the .pyx
    hows = {e.how for e in EDGES}
    assert {"module", "lazy", "type-only"} <= hows
    assert any(e.source == "foundation.registry._native" for e in EDGES)


def test_every_module_has_a_layer() -> None:
    orphans = sorted(m for m in MODULES if layer_of(m) is None)
    assert not orphans, (
        "modules that belong to no layer (move them into a layer's package, or add a"
        " layer in tests/test_layers.py and its docstring): " + ", ".join(orphans)
    )


def test_imports_point_down() -> None:
    upward = []
    for edge in EDGES:
        source, target = layer_of(edge.source), layer_of(edge.target)
        if edge.source == ROOT or source is None or target is None:
            continue  # the package re-exports; orphans are the test above's
        if target == TOP and source == TOP - 1:
            continue  # the demo and the command line use the public API
        if target > source:
            upward.append(f"{edge}: {layer_name(source)} imports {layer_name(target)}")
    assert not upward, "imports that point up a layer:\n  " + "\n  ".join(upward)


def test_package_does_not_import_cluster() -> None:
    bad = [
        str(e)
        for e in EDGES
        if e.source == ROOT and (e.target == "foundation.cluster" or ".cluster." in e.target + ".")
    ]
    assert not bad, "foundation/__init__.py imports cluster:\n  " + "\n  ".join(bad)


def test_no_import_cycles() -> None:
    cycles = _cycles(EDGES)
    text = "\n".join("  cycle:\n" + "\n".join(f"    {edge}" for edge in cycle) for cycle in cycles)
    assert not cycles, "import cycles (type-only and lazy imports count):\n" + text


# The checks above must be able to fail: run them on small made-up graphs.
def test_cycle_finder_reports_the_path() -> None:
    edges = [
        Edge("foundation.a", "foundation.b", 1, "module"),
        Edge("foundation.b", "foundation.c", 2, "lazy"),
        Edge("foundation.c", "foundation.a", 3, "type-only"),
        Edge("foundation.c", "foundation.d", 4, "module"),
    ]
    (cycle,) = _cycles(edges)
    assert [(e.source, e.target) for e in cycle] == [
        ("foundation.a", "foundation.b"),
        ("foundation.b", "foundation.c"),
        ("foundation.c", "foundation.a"),
    ]
    assert _cycles(edges[:2] + edges[3:]) == []


def test_layers_rank_as_documented() -> None:
    assert layer_of("foundation._util") == 0
    assert layer_of("foundation.errorsx") is None
    ranks = [
        layer_of(m)
        for m in (
            "foundation._util",
            "foundation.errors",
            "foundation.telemetry",
            "foundation.config",
            "foundation.etcd._client",
            "foundation.registry._facade",
            "foundation.supervision._tasks",
            "foundation.coordination._etcd",
            "foundation.cluster._x",
            "foundation.demo._cli",
        )
    ]
    assert ranks == sorted(ranks)
    assert len(set(ranks)) == len(ranks)
    assert layer_of("foundation._cli._inspect") == layer_of("foundation.demo") == TOP - 1
    assert layer_of("foundation.__main__") == TOP - 1
    assert layer_of("foundation") == TOP


def test_resolve_relative_imports() -> None:
    assert _resolve("foundation.registry._etcd", 1, "_backend") == "foundation.registry._backend"
    assert _resolve("foundation.registry._etcd", 2, None) == "foundation"
    assert _resolve("foundation.registry", 1, "_facade") == "foundation.registry._facade"
    assert _resolve("foundation.registry", 2, "errors") == "foundation.errors"
