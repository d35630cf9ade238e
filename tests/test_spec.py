"""What every loader must produce (pipeline/spec.py): the spec a run's config makes, the batch count with and without
drop_last, and the seeds the loaders share (one per run seed and epoch; the alternating flip's first coins fixed by
the seed alone)."""
import torch

from bench.core.variants import build_config
from pipeline.cifar10 import MEAN, STD
from pipeline.spec import LoaderSpec, epoch_seed, loader_spec, mean_std


def test_loader_spec_takes_every_setting_from_the_config():
    """Each value off its default, so a setting read from the wrong place (or fixed) shows."""
    cfg = build_config("seed", "eager", "full", {"aug.crop_padding": "2", "aug.flip": "false", "aug.cutout_size": "12",
                                                 "aug.cutout_prob": "0.5", "aug.cutout_clip": "false",
                                                 "aug.flip_alternate": "true", "data.drop_last": "false",
                                                 "train.precision": "bf16", "train.channels_last": "true"}, "cpu")
    assert loader_spec(cfg, 96, 7) == LoaderSpec(batch_size=96, crop_padding=2, flip=False, flip_alternate=True,
                                                 cutout_size=12, cutout_prob=0.5, cutout_clip=False, drop_last=False,
                                                 seed=7, dtype=torch.bfloat16, channels_last=True)
    fp32 = build_config("seed", "eager", "full", {"train.precision": "fp32", "train.channels_last": "false"}, "cpu")
    spec = loader_spec(fp32, 512, 0)
    assert (spec.dtype, spec.channels_last, spec.drop_last) == (torch.float32, False, True)


def test_num_batches_drops_or_keeps_the_last_partial_batch():
    assert LoaderSpec(batch_size=64, drop_last=True).num_batches(1000) == 15
    assert LoaderSpec(batch_size=64, drop_last=False).num_batches(1000) == 16
    assert LoaderSpec(batch_size=50, drop_last=False).num_batches(1000) == 20 == LoaderSpec(batch_size=50).num_batches(1000)


def test_epoch_seeds_are_reproducible_and_distinct_and_the_first_flips_follow_the_seed_alone():
    seeds = {epoch_seed(s, e) for s in range(4) for e in range(-1, 50)}
    assert len(seeds) == 4 * 51 and epoch_seed(3, 5) == epoch_seed(3, 5)
    cpu = torch.device("cpu")
    a = LoaderSpec(batch_size=8, seed=3).base_flips(256, cpu)
    assert a.dtype == torch.bool and a.shape == (256,) and 64 < int(a.sum()) < 192
    assert torch.equal(a, LoaderSpec(batch_size=512, seed=3, flip_alternate=True).base_flips(256, cpu))
    assert not torch.equal(a, LoaderSpec(batch_size=8, seed=4).base_flips(256, cpu))


def test_mean_std_are_the_data_sets_constants_in_fp32_on_the_device():
    mean, std = mean_std(torch.device("cpu"))
    assert mean.dtype == std.dtype == torch.float32 and mean.tolist() == torch.tensor(MEAN).tolist()
    assert std.tolist() == torch.tensor(STD).tolist()
