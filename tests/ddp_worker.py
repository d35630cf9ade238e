"""Run by tests/test_distributed.py under torchrun: a tiny real-data run on every rank, results as JSON."""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.core.distributed import DistInfo  # noqa: E402
from bench.core.train import evaluate
from bench.core.variants import build_config  # noqa: E402
from bench.run import train  # noqa: E402

TINY = {"train_subset": "64", "test_subset": "64", "batch_size": "64", "epochs": "4", "crop_padding": "0",
        "flip": "false", "cutout_size": "0", "sync_bn": "true", "precision": "fp32", "channels_last": "false",
        "stop_at_target": "false", "eval_from": "4", "device": "cpu", "optimizer": "sgd", "lr_max": "0.002"}
# SGD: Adam would amplify rounding-level gradients (the conv biases before BN have true gradient 0) into visible
# updates. One evaluation, at the end, of 64 images (32 per rank): this network's forward pass costs seconds per
# hundred images on one core.


def tiny_config(out: str, data_dir: str):
    return build_config("seed", None, "full", {**TINY, "results_dir": out, "data_dir": data_dir}, "cpu")


def main(mode: str, out: str, data_dir: str) -> None:
    rank = int(os.environ.get("RANK", "0"))
    cfg = tiny_config(out, data_dir)

    def maybe_fail(row):
        if mode == "fail" and rank == 1 and row["epoch"] == 1:
            raise RuntimeError("injected failure on rank 1")

    r = train(cfg, on_epoch=maybe_fail, quiet=True)
    inner = getattr(r.model, "module", r.model)
    single = evaluate(inner, *_test_split(cfg), cfg, torch.device("cpu"), DistInfo())[1]
    torch.save({k: v.clone() for k, v in inner.state_dict().items()}, Path(out) / f"rank{rank}.pt")
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "final_acc": r.final_test_acc, "single_acc": single,
         "losses": [e["train_loss"] for e in r.epochs]}))


def _test_split(cfg):
    from pipeline import load_cifar10
    data = load_cifar10(cfg.data.data_dir, "cpu").subset(cfg.data.train_subset, cfg.data.test_subset)
    return data.test_images, data.test_labels


if __name__ == "__main__":
    main(*sys.argv[1:4])
