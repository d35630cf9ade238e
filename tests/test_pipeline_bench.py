"""pipeline-bench stops each pipeline at its time cap (a fake clock, no wall-clock bounds)."""
import pytest
import torch

from bench.core.config import ConfigError
from bench.tools.pipeline_bench import parse_pipelines, time_pipeline


class FakeLoader:
    """10 batches of 4 labels per epoch; records which epochs were started and how far each went."""

    def __init__(self):
        self.spec = type("Spec", (), {"batch_size": 4})()
        self.served: dict[int, int] = {}

    def __len__(self):
        return 10

    def epoch(self, e):
        for _ in range(10):
            self.served[e] = self.served.get(e, 0) + 1
            yield torch.zeros(4, 3), torch.zeros(4)


def ticking(step=1.0):
    t = [0.0]

    def clock():
        t[0] += step
        return t[0]
    return clock


def test_time_cap_ends_the_pipeline_mid_epoch():
    loader = FakeLoader()
    r = time_pipeline(loader, torch.device("cpu"), rounds=3, time_cap_s=15.0, clock=ticking())
    assert r["capped"] and r["rounds"] == 2  # epoch 0 whole, epoch 1 cut short, epoch 2 never started
    assert loader.served[0] == 10 and 0 < loader.served[1] < 10 and 2 not in loader.served
    assert r["images"] == 4 * (loader.served[0] + loader.served[1])
    assert loader.served[10**6] == 2  # the warm-up batches, from an epoch no timed round uses


def test_without_the_cap_every_round_runs_whole():
    loader = FakeLoader()
    r = time_pipeline(loader, torch.device("cpu"), rounds=2, time_cap_s=1e9, clock=ticking())
    assert not r["capped"] and r["rounds"] == 2 and r["images"] == 80
    assert r["images_per_s_min"] <= r["images_per_s"] <= r["images_per_s_max"]


def test_pipelines_option_refuses_unknown_names():
    assert parse_pipelines("device,dataloader") == ["device", "dataloader"]
    with pytest.raises(ConfigError, match="device, dali, dataloader"):
        parse_pipelines("device,gpu")


@pytest.fixture
def no_data(monkeypatch):
    """Loading the data set is pipeline-bench's first work: it records the call and stops the command there."""
    calls = []

    def load(*a, **k):
        calls.append(a)
        raise RuntimeError("DATA LOADED")
    monkeypatch.setattr("pipeline.load_cifar10", load)
    return calls


@pytest.mark.parametrize("subset", [1, 511])
def test_a_training_subset_under_one_batch_is_one_line_before_any_work(capsys, tmp_path, no_data, subset):
    from bench.cli import main
    rc = main(["pipeline-bench", f"--train-subset={subset}", f"--results-dir={tmp_path}"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "", (rc, out, err)
    assert err.count("\n") == 1 and err.startswith("config error: ") and "Traceback" not in err, err
    assert f"--train-subset={subset} is under one batch of 512" in err and "--train-subset >= 512" in err, err
    assert no_data == [] and not (tmp_path / "pipeline.csv").exists()


@pytest.mark.parametrize("subset", [512, 0])
def test_one_whole_batch_or_all_images_gets_to_the_data(tmp_path, no_data, subset):
    """The control for the refusal above: from one batch up (and 0, all images) the command starts its work."""
    from bench.tools.pipeline_bench import main
    with pytest.raises(RuntimeError, match="DATA LOADED"):
        main(str(tmp_path), "device", 1, 1.0, subset)
    assert len(no_data) == 1
