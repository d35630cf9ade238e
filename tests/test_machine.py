"""What a row says about where it ran: the CPU's native-bf16 probe, the headings the leaderboard gives a machine's
facts, the commit (with and without .git), and an environment stamp that imports no triton."""
import json
import os
import subprocess
import sys

import pytest
import torch

from bench.core import machine
from bench.records import leaderboard
from tests.conftest import ROOT
from tests.test_labels import cpu_row, write_results


@pytest.mark.parametrize("mkldnn, bf16_ops, native", [(True, True, True), (True, False, False),
                                                      (False, True, False), (False, False, False)])
def test_the_cpu_probe_needs_onednn_and_its_bf16_support(monkeypatch, mkldnn, bf16_ops, native):
    """Native bf16 = oneDNN present and reporting bf16 support (AVX512-BF16 or AMX); either missing: no."""
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: mkldnn)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: bf16_ops)
    assert machine.cpu_has_native_bf16() is native


def test_two_machines_with_one_name_get_two_headings(tmp_path):
    write_results(tmp_path, [cpu_row("with", "AMD EPYC (2 threads)", "bf16", {"kind": "cpu", "native_bf16": True},
                                     label="fast"),
                             cpu_row("without", "AMD EPYC (2 threads)", "fp32",
                                     {"kind": "cpu", "native_bf16": False, "isa": ["avx2"]}, label="fast")])
    ok, _ = leaderboard.load(tmp_path)
    assert sorted(set(ok["machine"])) == ["AMD EPYC (2 threads): native bf16, ISA not recorded",
                                          "AMD EPYC (2 threads): no native bf16, AVX2"]
    assert leaderboard.ranking(ok)["runs"].tolist() == [1, 1]  # never pooled


def test_headings_name_gpu_facts_and_say_when_a_row_has_none():
    facts = {"kind": "cuda", "sms": 132, "memory_gib": 139.8, "capability": "9.0", "gpus_used": 2}
    assert machine.device_heading("NVIDIA H200", json.dumps(facts)) == "NVIDIA H200: 132 SMs, 139.8 GiB, sm_90, 2 GPUs"
    assert machine.device_heading("X", "") == "X: machine facts not recorded"
    assert machine.facts_text(json.dumps({"kind": "cpu", "native_bf16": True, "isa": ["avx2", "amx_bf16"]})) == \
        "native bf16, AMX"


def test_git_commit_without_git_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_GIT_COMMIT", "d9ecd36")
    assert machine.git_commit(tmp_path) == "d9ecd36"  # tmp_path has no .git (it may sit inside a repository)
    monkeypatch.delenv("BENCH_GIT_COMMIT")
    assert machine.git_commit(tmp_path) == "unknown"
    assert "BENCH_GIT_COMMIT" in machine.commit_note("unknown") and machine.commit_note("d9ecd36") == ""


def test_git_commit_marks_code_changes_dirty_but_not_results(tmp_path):
    import shutil
    import subprocess

    from bench.core.machine import git_commit
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    (tmp_path / "results").mkdir()
    (tmp_path / "train.py").write_text("lr = 1\n")
    (tmp_path / "results" / "runs.csv").write_text("run_id\n")
    (tmp_path / "README.md").write_text("# notes\n")
    subprocess.run(git + ["init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(git + ["add", "."], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-qm", "x"], cwd=tmp_path, check=True)
    clean = git_commit(tmp_path)
    assert len(clean) == 12 and not clean.endswith("-dirty")
    (tmp_path / "results" / "runs.csv").write_text("run_id\nr1\n")  # a run appended its row
    assert git_commit(tmp_path) == clean
    (tmp_path / "README.md").write_text("# notes, edited while a run trains\n")  # prose is not code
    assert git_commit(tmp_path) == clean
    (tmp_path / "train.py").write_text("lr = 2\n")  # the code changed
    assert git_commit(tmp_path) == clean + "-dirty"


def test_triton_on_cpu_needs_no_environment_variable(monkeypatch):
    """The row's environment stamp must not import triton before the model chooses its interpreter."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    code = ("import sys, torch\n"
            "from bench.core.machine import environment\n"
            "env = environment(torch.device('cpu'))\n"
            "assert 'triton' not in sys.modules and env['triton_version']\n"
            "from model.resnet import norm_act_factory\n"
            "x = torch.randn(2, 4, 3, 3, requires_grad=True)\n"
            "norm_act_factory('bn', 'triton')(4)(x).sum().backward()\n"
            "assert x.grad is not None\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
