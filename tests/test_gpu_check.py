"""The one GPU check script: on a machine without CUDA it says so, runs nothing and exits non-zero."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path; a CUDA device is visible here")
def test_gpu_check_refuses_without_cuda(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), sys.executable],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert "no CUDA device" in proc.stderr
    assert not any(out.iterdir())  # nothing was run, so nothing was written


def test_kernel_bench_without_cuda_writes_nothing(tmp_path, capsys):
    from bench.kernel_bench import main
    if torch.cuda.is_available():
        pytest.skip("checks the no-GPU path; a CUDA device is visible here")
    assert main(str(tmp_path)) == 0
    assert "needs a CUDA device" in capsys.readouterr().out and not (tmp_path / "kernels.csv").exists()
