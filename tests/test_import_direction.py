"""Imports run one way: formats -> codec -> quant -> engines -> checkpoint -> nn -> eval, CLI on top.

The graph is read with `ast` from src/fp8port: module-level and function-level (lazy) imports
alike, since a lazy import is still a dependency. Each package has a rank; an import may only go
to a lower rank. `errors`, `names`, `jsonsafe`, `arrays` (NumPy / torch bridging) and `backends` are
the floor every package may use; the package root (`fp8port/__init__`, the user API) re-exports from
above and is left out.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fp8port"
FLOOR = {"errors", "names", "jsonsafe", "arrays", "backends"}
RANK = {
    "cpu": 1,
    "formats": 1,
    "codec": 2,
    "quant": 3,
    "engines": 3.5,
    "kernels": 4,
    "checkpoint": 4,
    "conform": 4,
    "deploy": 4,
    "distributed": 4,
    "models": 4,
    "nn": 5,
    "eval": 6,
    "demo": 7,
    "cli": 8,
    "__main__": 9,
}


def _module(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _is_module(parts: list[str]) -> bool:
    p = SRC.parent.joinpath(*parts)
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports() -> dict[tuple[str, str], set[str]]:
    """(package, package) -> the importing modules, for every import between two packages."""
    edges = defaultdict(set)
    for f in SRC.rglob("*.py"):
        mod = _module(f)
        pkg = mod if f.name == "__init__.py" else mod[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name.split(".") for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (pkg[: len(pkg) - node.level + 1] if node.level else []) + (
                    node.module.split(".") if node.module else []
                )
                targets = [base + [a.name] if _is_module(base + [a.name]) else base for a in node.names]
            for t in targets:
                if t[0] == "fp8port" and len(mod) > 1 and len(t) > 1 and t[1] != mod[1]:
                    edges[(mod[1], t[1])].add(".".join(mod))
    return edges


EDGES = imports()


def test_the_graph_is_read():
    assert ("checkpoint", "quant") in EDGES and ("nn", "checkpoint") in EDGES and ("cli", "checkpoint") in EDGES
    assert {a for a, _ in EDGES} <= set(RANK) | FLOOR, "a new package needs a rank here"


def test_imports_point_down():
    bad = {
        f"{a} -> {b} ({', '.join(sorted(m))})"
        for (a, b), m in EDGES.items()
        if b not in FLOOR and (a in FLOOR or RANK[a] <= RANK[b])
    }
    assert not bad, sorted(bad)


def test_no_package_cycle():
    graph = defaultdict(set)
    for a, b in EDGES:
        graph[a].add(b)

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for n in graph[todo.pop()] - seen:
                seen.add(n)
                todo.append(n)
        return seen

    assert not [p for p in list(graph) if p in reach(p)]


def test_nothing_imports_cli():
    assert not {a: m for (a, b), m in EDGES.items() if b == "cli" and a != "__main__"}


@pytest.mark.parametrize(
    "low, high",
    [
        (low, high)
        for low in ("cpu", "formats", "codec", "quant", "checkpoint", "kernels")
        for high in ("nn", "kernels")
        if low != high
    ],
)
def test_nothing_below_nn_imports_nn_or_kernels(low, high):
    """GPU dispatch is a registration: kernels registers its backend in quant.devices when imported."""
    assert (low, high) not in EDGES, sorted(EDGES[(low, high)])
