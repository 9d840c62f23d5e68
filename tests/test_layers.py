"""The package's import graph holds its layers (issue #11).

Every module of ``flask_ccsso`` is parsed with :mod:`ast` (nothing is
imported). A *runtime edge* is an import that runs: module level or inside a
function, but not under ``if TYPE_CHECKING:`` (those are for annotations and
never execute). Importing ``a.b.c`` also runs the package ``a.b``'s
``__init__``, so that is an edge too (the root package excepted: it is the
public face and is entered first).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "flask_ccsso"
PACKAGE = "flask_ccsso"

#: The allowed layer order, lowest first: a runtime import may point to the
#: same layer or a lower one, never up. Each row: layer, module prefixes (a
#: prefix names a module and everything below it). ``state`` sits below the
#: gate at runtime (the gate reads the state per request; ``init_app``
#: builds it from the gate's parts, which ``state.py`` names for the type
#: checker only). Everything not listed is the face.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("vocabulary", ("exceptions", "reasons", "signals", "identity", "_context")),
    ("config", ("_validate", "config")),
    ("storage", ("stores", "sessions")),
    ("providers", ("providers",)),
    ("state", ("state",)),
    ("gate", ("gate",)),
    ("audit", ("audit",)),
    ("face", ("",)),  # extension, views, responses, csrf, testing, backchannel, audit_glue, cli, devidp, ...
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import under ``node`` except those in ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.orelse:
                yield from _runtime_imports(sub) if not isinstance(sub, (ast.Import, ast.ImportFrom)) else [sub]
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        else:
            yield from _runtime_imports(child)


def _known(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    is_pkg = MODULES[module].name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            prefix = base[: len(base) - node.level + 1]
            target = ".".join(prefix + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]
    else:
        names = [a.name for a in node.names]
    out = []
    for name in names:
        if not name.startswith(PACKAGE):
            continue
        found = _known(name)
        if found is None:
            continue
        out.append(found)
        # the packages on the way run their __init__ (the root excepted)
        parent = found.rpartition(".")[0]
        while parent and parent != PACKAGE:
            out.append(parent)
            parent = parent.rpartition(".")[0]
    return out


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _runtime_imports(tree):
            for target in _targets(module, node):
                if target != module and not module.startswith(target + "."):
                    edges[module].add(target)
    return edges


GRAPH = _graph()


def layer_of(module: str) -> int:
    rel = module[len(PACKAGE) + 1:] if module != PACKAGE else ""
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix and (rel == prefix or rel.startswith(prefix + ".")):
                return index
    return len(LAYERS) - 1


def _layer_name(module: str) -> str:
    return LAYERS[layer_of(module)][0]


def _in(module: str, *prefixes: str) -> bool:
    rel = module[len(PACKAGE) + 1:]
    return any(rel == p or rel.startswith(p + ".") for p in prefixes)


def _cycles() -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def _edges(where: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(m, t) for m, ts in GRAPH.items() if _in(m, *where) for t in sorted(ts)]


def test_the_graph_is_read() -> None:
    assert len(MODULES) > 40
    assert f"{PACKAGE}.state" in GRAPH[f"{PACKAGE}.extension"]


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_every_runtime_import_points_down_or_sideways() -> None:
    upward = [f"{m} ({_layer_name(m)}) -> {t} ({_layer_name(t)})"
              for m, ts in GRAPH.items() for t in sorted(ts) if layer_of(t) > layer_of(m)]
    assert upward == []


def test_the_vocabulary_imports_nothing_of_the_package() -> None:
    assert _edges(LAYERS[0][1]) == []


@pytest.mark.parametrize(("where", "never"), [
    (("gate",), ("extension", "views", "cli", "responses", "csrf", "testing", "backchannel")),
    (("providers",), ("gate", "views", "extension", "sessions.index", "audit", "state")),
    (("audit",), ("gate", "views", "extension", "state")),
], ids=["gate", "providers", "audit"])
def test_forbidden_imports(where: tuple[str, ...], never: tuple[str, ...]) -> None:
    assert [(m, t) for m, t in _edges(where) if _in(t, *never)] == []


def test_state_imports_only_what_it_composes_from() -> None:
    allowed = (*LAYERS[0][1], "_validate", "config", "stores", "sessions", "providers")
    assert [t for m, t in _edges(("state",)) if not _in(t, *allowed)] == []
