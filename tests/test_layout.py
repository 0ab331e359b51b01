"""The package's shape: no module imports another that (directly or through others) imports
it back, counting imports inside functions too (they hide cycles, not remove them)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hmr_fast"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its text."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_package():
    graph = import_graph()
    assert "hmr_fast.train.loop" in graph and graph["hmr_fast.train.loop"]
    assert cycles(graph) == []


def test_evaluation_and_apps_do_not_import_the_training_loop():
    """eval, demo and predict load models and batch data without the trainer."""
    graph = import_graph()
    loop = {"hmr_fast.train.loop", "hmr_fast.train.run", "hmr_fast.train.step"}
    for name in ("hmr_fast.eval.run", "hmr_fast.eval.protocols", "hmr_fast.demo",
                 "hmr_fast.predict", "hmr_fast.pretrained"):
        assert not graph[name] & loop, (name, graph[name] & loop)


def test_kernels_come_from_this_tree():
    """From a source tree, hmr_fast.kernels is this tree's kernels/ folder (never another
    checkout's that an editable install in the same environment maps the name to)."""
    from pathlib import Path

    import hmr_fast.kernels

    from hmr_fast.ops.kernels_loader import kernels_package

    assert kernels_package() is hmr_fast.kernels
    assert Path(hmr_fast.kernels.__file__).resolve().parent == PACKAGE.parent / "kernels"
