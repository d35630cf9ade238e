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
