"""`python -m bench profile`: a trace, a per-step table and the top ops, from the step training uses."""
import csv
import json

from bench.cli import main


def test_profile_writes_a_trace_and_per_step_rows(tmp_path, capsys):
    assert main(["profile", "--steps=2", "--warmup=1", "--batch_size=8", f"--results-dir={tmp_path}"]) == 0
    (out,) = (tmp_path / "profiles").iterdir()
    with open(out / "steps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["0", "1"]
    for r in rows:
        assert int(r["kernels"]) > 50  # forward, backward and update ops of the 8-conv network
        assert 0 < float(r["device_busy_ms"]) <= float(r["host_ms"]) * 1.05
    trace = json.loads((out / "trace.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"step 0", "step 1"} <= names and "aten::convolution_backward" in names
    table = (out / "top_ops.md").read_text()
    assert "| step | host ms |" in table and "`aten::" in table
    assert "trace:" in capsys.readouterr().out


def test_profile_refuses_bad_input_in_one_line(capsys, tmp_path):
    for argv in (["profile", "--steps=0"], ["profile", "--preset=nope"], ["profile", "--nope=1"]):
        assert main(argv + [f"--results-dir={tmp_path}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "profiles").exists()


def test_profile_of_a_whole_step_graph_is_refused_on_a_cpu_in_one_line(capsys, tmp_path, monkeypatch):
    import pytest
    import torch
    if torch.cuda.is_available():
        pytest.skip("checks the CPU's refusal; a CUDA device is visible here")
    monkeypatch.delenv("BENCH_CUDA_STANDIN", raising=False)
    monkeypatch.setattr("bench.tools.step_profile.build_model", lambda *a, **k: pytest.fail("profile started"))
    assert main(["profile", "--compile=graph", "--warmup_steps=3", f"--results-dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "CUDA graph; this run is on the cpu" in err and err.count("\n") == 1, err
    assert not (tmp_path / "profiles").exists()


def test_profile_of_a_whole_step_graph_through_the_cpu_stand_in(tmp_path, monkeypatch):
    """compile=graph through `bench profile` (the GPU check's rehearsal: BENCH_CUDA_STANDIN=1, run_directly for the
    capture): the capture's warm-up calls must fit the buffers profile sizes for warm-up + steps (they overflowed
    them: index out of bounds here, a device-side assert on CUDA). The tiny network stands in for the CustomResNet, whose
    compile takes minutes on a CPU; the step, the sizes and the command are profile's."""
    import torch
    from tests.test_step import tiny_net
    monkeypatch.setenv("BENCH_CUDA_STANDIN", "1")
    monkeypatch.setattr("bench.tools.step_profile.build_model",
                        lambda *a, **k: tiny_net().to(memory_format=torch.channels_last))
    torch._dynamo.reset()
    assert main(["profile", "--steps=2", "--warmup=1", "--compile=graph", "--warmup_steps=1", "--batch_size=4",
                 f"--results-dir={tmp_path}"]) == 0
    (out,) = (tmp_path / "profiles").iterdir()
    with open(out / "steps.csv", newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["0", "1"]
    header = (out / "top_ops.md").read_text()
    assert "compile graph" in header and "2 graphs compiled, 0 graph breaks" in header
