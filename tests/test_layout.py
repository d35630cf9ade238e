"""Modules import one another without circles (function-level imports included), and bench's layers import only
downwards: the core (config, recipes, variants, loop, step, optimizers) below the records (results, leaderboard,
report) below the tools (benches, profile, kernel-static, lr-find, choose) below the commands (bench/*.py); and the
tests mirror the modules: each has a tests/test_<module>.py."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "pipeline", "model", "kernels")


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file."""
    graph = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            mod = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            edges = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    here = mod.split(".") if parts[-1] == "__init__" else mod.split(".")[:-1]
                    anchor = ".".join(here[:len(here) - node.level + 1])
                    base = anchor + ("." + node.module if node.module else "") if node.level else node.module
                    names = [f"{base}.{a.name}" for a in node.names] + [base]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                edges |= {n for n in names if n.split(".")[0] in PACKAGES}
            graph[mod] = edges
    return {m: {e for e in es if e in graph and e != m and not m.startswith(e + ".")} for m, es in graph.items()}


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
    """bench.run -> bench.records.report only (the report once imported loader_spec back from the loop)."""
    graph = import_graph()
    assert "bench.records.report" in graph["bench.run"] and "bench.run" not in graph["bench.records.report"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


LAYERS = ("bench.core", "bench.records", "bench.tools", "bench")  # lowest first


def layer(module: str) -> int:
    return next(i for i, name in enumerate(LAYERS) if module == name or module.startswith(name + "."))


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {e}" for m, es in graph.items() if m.startswith("bench.") for e in es
                  if e.startswith("bench.") and layer(e) > layer(m))


def test_bench_layers_import_only_downwards():
    graph = import_graph()
    assert {"bench.core.train", "bench.records.report", "bench.tools.lr_find", "bench.run"} <= set(graph)
    assert upward_imports(graph) == []
    assert upward_imports({**graph, "bench.core.train": graph["bench.core.train"] | {"bench.records.report"}}) == [
        "bench.core.train -> bench.records.report"]  # the import the loop once had is seen


def test_the_loop_imports_no_plotting_and_writes_no_file():
    """bench.core.train imports neither matplotlib nor the records; what a run records is bench/run.py's."""
    source = (ROOT / "bench" / "core" / "train.py").read_text()
    imported = {n.module or "" for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.startswith(("matplotlib", "bench.records"))}, imported
    assert "open(" not in source and "write_csv" not in source


def test_the_checker_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def untested_modules(root: Path) -> list[str]:
    """Source modules (bench, pipeline, model, kernels) with no tests/test_<module>.py; `__init__` and `__main__`
    (the package and the `python -m bench` entry) are not modules of their own."""
    tests = {p.name for p in (root / "tests").glob("test_*.py")}
    return sorted(str(p.relative_to(root)) for pkg in PACKAGES for p in (root / pkg).rglob("*.py")
                  if p.stem not in ("__init__", "__main__") and f"test_{p.stem}.py" not in tests)


def test_every_module_has_a_test_file_of_its_own_name(tmp_path):
    assert untested_modules(ROOT) == [], "a module without tests/test_<module>.py"
    # the check sees one: a module added without its test file
    for rel in ("bench/core/__init__.py", "bench/core/ema.py", "tests/test_other.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    assert untested_modules(tmp_path) == ["bench/core/ema.py"]
