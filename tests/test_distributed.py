"""Data-parallel training under torchrun on the CPU (gloo, 2 processes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.core.distributed import DistInfo, shard
from pipeline import LoaderSpec, make_loader
from tests.test_loaders import id_images, recover_ids

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(nproc, mode, out, data_dir, dist_timeout_s=60, timeout=900):
    """`timeout` only guards the test suite against a hang; no test asserts a duration."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPEEDRUN_DIST_TIMEOUT_S": str(dist_timeout_s)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(WORKER), mode, str(out), str(data_dir)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_shards_cover_the_set_once_per_epoch():
    images, labels = id_images(1000)
    seen = []
    for rank in range(2):
        info = DistInfo(rank=rank, world=2)
        part = shard(len(images), info)
        loader = make_loader("device", images[part], labels[part],
                             LoaderSpec(batch_size=50, seed=3 + 7919 * rank, drop_last=True), 0)
        assert len(loader) == 10  # equal step counts on every rank
        for x, y in loader.epoch(0):
            ids = recover_ids(x)
            assert torch.equal(ids % 10, y)
            seen.append(ids)  # image ids repeat every 250 images: each shows up 4 times in 1,000
    seen = torch.cat(seen)
    assert len(seen) == 1000 and torch.equal(torch.bincount(seen, minlength=250), torch.full((250,), 4))
    assert shard(1001, DistInfo(1, 2)) == slice(1, 1001, 2) and len(range(1001)[shard(1001, DistInfo(1, 2))]) == 500


@pytest.mark.long
def test_two_ranks_match_one_rank_and_each_other(tmp_path, cifar_dir):
    """64 images = one global batch per epoch, augmentation off, SyncBatchNorm on: a 2-rank run sees exactly
    the 1-rank run's batch, so the loss curves agree to rounding. The one rank is the worker's run in this process
    (no process group, as `bench run` without torchrun), which spares two interpreter starts."""
    from bench.run import train
    from tests.ddp_worker import tiny_config
    one, two = tmp_path / "one", tmp_path / "two"
    two.mkdir()
    proc = torchrun(2, "train", two, cifar_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r1 = {"losses": [e["train_loss"] for e in train(tiny_config(str(one), str(cifar_dir)), quiet=True).epochs]}
    r2 = [json.loads((two / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(r1["losses"]) == 4 and r1["losses"][-1] < r1["losses"][0]
    torch.testing.assert_close(torch.tensor(r2[0]["losses"]), torch.tensor(r1["losses"]), rtol=1e-3, atol=1e-4)
    # identical parameters and buffers on both ranks (DDP averages gradients; SyncBN shares statistics)
    s0, s1 = (torch.load(two / f"rank{r}.pt") for r in range(2))
    assert s0.keys() == s1.keys() and all(torch.equal(s0[k], s1[k]) for k in s0)
    # both ranks report the all-reduced accuracy, equal to one process evaluating the same weights
    assert r2[0]["final_acc"] == r2[1]["final_acc"] == r2[0]["single_acc"]
    rows = (two / "runs.csv").read_text().splitlines()
    assert len(rows) == 2 and ",2," in rows[1]  # one row, written by rank 0, world_size 2


def test_a_failing_rank_ends_the_run_with_an_error(tmp_path, cifar_dir):
    """The collective timeout is set far beyond the hang guard, so a run that ends at all was ended by the
    failure (torchrun stopping the other rank), not by rank 0 timing out in a collective."""
    proc = torchrun(2, "fail", tmp_path, cifar_dir, dist_timeout_s=24 * 3600, timeout=900)
    assert proc.returncode != 0
    assert "injected failure on rank 1" in proc.stderr + proc.stdout
    assert not (tmp_path / "runs.csv").exists()  # no row for a run that did not complete


def test_indivisible_global_batch_is_a_clear_error(monkeypatch):
    from bench.core.variants import build_config
    from bench.run import train
    monkeypatch.setattr("bench.core.train.init_distributed", lambda name: (DistInfo(0, 3), torch.device("cpu")))
    with pytest.raises(ValueError, match="batch_size=512 does not split evenly over 3 ranks"):
        train(build_config("seed", None, "full", {"device": "cpu"}), write=False)
