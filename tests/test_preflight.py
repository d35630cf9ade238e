"""The checks before any training (bench/preflight.py) on their own: a whole-step CUDA graph refused on a CPU (by the
config, by check_device and through `bench run`), and the C++ compiler probe seeing a missing compiler. The CLI's
one-line refusals of every check are tests/test_cli.py's."""
import pytest
import torch

from bench.core.variants import build_config


def test_bench_run_with_a_whole_step_graph_is_refused_on_the_cpu_in_one_line(capsys, monkeypatch):
    from bench.cli import main
    if torch.cuda.is_available():
        pytest.skip("checks the CPU's refusal; a CUDA device is visible here")
    monkeypatch.setattr("bench.run.train", lambda *a, **k: pytest.fail("bench run started"))
    assert main(["run", "--preset=fast4", "--variant=fast", "--compile=graph", "--warmup_steps=3"]) == 2
    err = capsys.readouterr().err
    assert "CUDA graph; this run is on the CPU" in err and err.count("\n") == 1


def test_a_whole_step_graph_is_refused_on_the_cpu():
    from bench.core.config import ConfigError
    from bench.preflight import check_device
    with pytest.raises(ConfigError, match="compile=graph"):
        build_config("fast4", "fast", "full", {"compile": "graph", "warmup_steps": "0"})
    with pytest.raises(ConfigError, match="CUDA graph; this run is on the CPU"):
        check_device(build_config("fast4", "fast", "full", {"compile": "graph", "warmup_steps": "3", "device": "cpu"}))


def test_the_cpp_compiler_probe_sees_a_missing_compiler(monkeypatch):
    from torch._inductor.cpp_builder import cpp_compiler_search  # Inductor's own cache of the search's answer
    from bench.preflight import cpp_compiler_problem
    cpp_compiler_problem.cache_clear(), cpp_compiler_search.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        assert "none found" in cpp_compiler_problem()
    finally:
        cpp_compiler_problem.cache_clear(), cpp_compiler_search.cache_clear()
