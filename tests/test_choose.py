"""`python -m bench choose-fast`: every execution setting of this device type is a candidate (interpreted Triton
never is one on a CPU), each measured through the loop, and the row of the settings `fast` uses is marked."""
import csv
import itertools
from types import SimpleNamespace

import torch

from bench.core.variants import build_config
from bench.tools import choose


def test_candidates_are_every_setting_and_triton_only_on_cuda():
    settings = set(itertools.product(["fp32", "bf16"], ["False", "True"], ["off", "default"]))
    cpu = choose.candidates("cpu", ["off", "default"])
    assert len(cpu) == 8 and {(c["precision"], c["channels_last"], c["compile"]) for c in cpu} == settings
    assert {c["norm_kernel"] for c in cpu} == {"eager"}
    cuda = choose.candidates("cuda", ["off", "default"])
    assert len(cuda) == 16 and {(c["precision"], c["channels_last"], c["compile"], c["norm_kernel"]) for c in cuda} == {
        (*s, k) for s in settings for k in ("eager", "triton")}


def test_each_candidate_is_trained_and_the_fast_variants_row_is_marked(tmp_path, monkeypatch, capsys):
    """The loop stood in (img/s from the settings: fp32 NCHW eager is fastest here): one row per candidate in
    variants.csv, trained with its own settings, `fast`'s own settings marked, and the note that it is slower."""
    trained = []

    def fit(cfg, data, quiet):
        t = cfg.train
        trained.append((t.precision, str(t.channels_last), t.compile, cfg.model.norm_kernel, t.batch_size, t.epochs))
        speed = 1000.0 if (t.precision, t.channels_last, t.compile) == ("fp32", False, "off") else 100.0
        return SimpleNamespace(images_per_s=speed, warmup_s=0.0)
    monkeypatch.setattr(choose, "resolve_device", lambda name: torch.device("cpu"))
    monkeypatch.setattr(choose, "load_cifar10", lambda *a: None)
    monkeypatch.setattr(choose, "fit", fit)
    assert choose.main(str(tmp_path), steps=2, compile_modes=["off", "default"], batch_size=16) == 0
    with open(tmp_path / "variants.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cands = choose.candidates("cpu", ["off", "default"])
    assert trained == [(c["precision"], c["channels_last"], c["compile"], "eager", 16, 1) for c in cands]
    assert [(r["precision"], r["channels_last"], r["compile"]) for r in rows] == [
        (c["precision"], c["channels_last"], c["compile"]) for c in cands]
    fast = build_config("seed", "fast", "full", device_type="cpu").train
    chosen = [r for r in rows if r["chosen_by_config"] == "True"]
    assert [(r["precision"], r["channels_last"], r["compile"]) for r in chosen] == [
        (fast.precision, str(fast.channels_last), fast.compile)]
    out = capsys.readouterr().out
    assert "fastest here: fp32 channels_last=False compile=off" in out and "8 rows appended" in out
    assert ("update fast_variant" in out) == ((fast.precision, fast.channels_last, fast.compile) != ("fp32", False, "off"))
