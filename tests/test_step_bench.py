"""`python -m bench step-bench`: a row per step kind, graph-capture modes refused on a CPU in one line, and every mode
through the CPU stand-ins (the GPU check's rehearsal)."""
import pytest
import torch

from tests.test_step import tiny_net


def test_step_bench_writes_a_row_per_step_kind(tmp_path, capsys, monkeypatch):
    import csv

    from bench.cli import main
    monkeypatch.delenv("BENCH_CUDA_STANDIN", raising=False)
    assert main(["step-bench", "--batch-sizes=4", "--steps=1", "--compile-modes=off",
                 f"--results-dir={tmp_path}"]) == 0
    with open(tmp_path / "step.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["compile"], r["batch_size"]) for r in rows] == [("plain", "off", "4"), ("new", "off", "4")]
    assert all(float(r["ms_per_step"]) > 0 for r in rows)
    assert [(r["graphs"], r["graph_breaks"], r["cudagraph_skips"]) for r in rows] == [("0", "0", "0")] * 2
    assert main(["step-bench", "--compile-modes=nope", f"--results-dir={tmp_path}"]) == 2  # refused on any device
    assert "nope not available" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's refusal; on CUDA these modes run")
@pytest.mark.parametrize("mode", ["reduce-overhead", "graph"])
def test_step_bench_refuses_graph_capture_modes_on_a_cpu_in_one_line(mode, tmp_path, capsys, monkeypatch):
    from bench.cli import main
    monkeypatch.delenv("BENCH_CUDA_STANDIN", raising=False)
    monkeypatch.setattr("bench.tools.step_bench.build_model", lambda *a, **k: pytest.fail("step-bench started"))
    assert main(["step-bench", f"--compile-modes={mode}", f"--results-dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "CUDA graphs need CUDA" in err and err.count("\n") == 1 and not (tmp_path / "step.csv").exists()


def test_step_bench_runs_every_mode_through_the_cpu_stand_ins(tmp_path, monkeypatch):
    """The GPU check's rehearsal: with BENCH_CUDA_STANDIN=1 a CPU runs reduce-overhead (no CUDA graphs there) and
    graph (through run_directly) with the bench's own buffer sizes. The network is the tiny one (the compile of the
    CustomResNet takes minutes here); the modes, the step and the sizes are step-bench's."""
    import csv

    from bench.cli import main
    monkeypatch.setenv("BENCH_CUDA_STANDIN", "1")
    monkeypatch.setattr("bench.tools.step_bench.build_model",
                        lambda *a, **k: tiny_net().to(memory_format=torch.channels_last))
    assert main(["step-bench", "--batch-sizes=4", "--steps=2", "--compile-modes=graph,reduce-overhead",
                 f"--results-dir={tmp_path}"]) == 0
    with open(tmp_path / "step.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["compile"]) for r in rows] == [("plain", "off"), ("new", "graph"), ("new", "reduce-overhead")]
    assert all(float(r["ms_per_step"]) > 0 for r in rows) and rows[1]["graphs"] == "2"
    assert rows[1]["graph_breaks"] == "0" and int(rows[2]["cudagraph_skips"]) >= 1  # a CPU has no CUDA graphs
