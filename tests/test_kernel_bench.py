"""`python -m bench kernel-bench` without CUDA: it says it needs a CUDA device and writes no kernels.csv."""
import pytest
import torch


def test_kernel_bench_without_cuda_writes_nothing(tmp_path, capsys, monkeypatch):
    from bench.tools.kernel_bench import main
    if torch.cuda.is_available():
        pytest.skip("checks the no-GPU path; a CUDA device is visible here")
    monkeypatch.delenv("BENCH_CUDA_STANDIN", raising=False)
    assert main(str(tmp_path)) == 0
    assert "needs a CUDA device" in capsys.readouterr().out and not (tmp_path / "kernels.csv").exists()
