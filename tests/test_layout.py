"""Modules import one another without circles (function-level imports included)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "pipeline", "model", "kernels")


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file."""
    graph = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).glob("*.py"):
            mod = f"{pkg}.{path.stem}" if path.stem != "__init__" else pkg
            edges = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    base = pkg + ("." + node.module if node.module else "") if node.level else node.module
                    names = [f"{base}.{a.name}" for a in node.names] + [base]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                edges |= {n for n in names if n.split(".")[0] in PACKAGES}
            graph[mod] = edges
    return {m: {e for e in es if e in graph and e != m and e != m.split(".")[0]} for m, es in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (c := visit(n, path + [n])):
                return c
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m, [m])):
            return c
    return None


def test_no_import_circles_in_pipeline():
    graph = import_graph()
    assert "pipeline.spec" in graph["pipeline.dali"] and "pipeline.loaders" not in graph["pipeline.dali"]
    assert "pipeline.dali" in graph["pipeline.loaders"]  # the edge that closed the circle is still seen
    cycle = find_cycle({m: es for m, es in graph.items() if m.startswith("pipeline")})
    assert cycle is None, " -> ".join(cycle)


def test_no_import_circles_anywhere():
    """bench.train -> bench.report only (report once imported loader_spec back from train)."""
    graph = import_graph()
    assert "bench.report" in graph["bench.train"] and "bench.train" not in graph["bench.report"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_checker_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
