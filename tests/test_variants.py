"""The variant chosen per machine, against stand-ins of each kind: a CPU with native bf16, a CPU without, a CUDA
device. The CPU probe (`cpu_has_native_bf16`) is stood in and the variants follow its answer (the probe itself,
against what torch reports, is tested in tests/test_machine.py). Nothing here asks this machine what it has: each kind
is tested wherever the suite runs."""
import pytest

from bench.core import machine
from bench.core.variants import build_config


@pytest.fixture
def cpu_with(monkeypatch):
    """cpu_with(native): the bf16 probe answers `native` wherever the config tree asks it; returns the calls."""
    calls = []

    def stand_in(native):
        def probe():
            calls.append(native)
            return native
        monkeypatch.setattr(machine, "cpu_has_native_bf16", probe)
        monkeypatch.setattr("bench.core.variants.cpu_has_native_bf16", probe, raising=False)  # imported by name there
        return calls
    return stand_in


def execution(cfg):
    t = cfg.train
    return (cfg.data.pipeline, t.precision, t.channels_last, t.compile, t.warmup_steps, cfg.model.norm_kernel)


@pytest.mark.parametrize("native, precision", [(True, "bf16"), (False, "fp32")])
def test_fast_on_a_cpu_is_bf16_only_where_it_is_native(cpu_with, native, precision):
    """fast on a CPU: device pipeline, channels-last, eager (compile measured slower there), no warm-up; bf16 where
    the CPU runs it natively, else fp32 (bf16 measured ~8x slower there: docs/variants.md)."""
    calls = cpu_with(native)
    for preset in ("seed", "fast4"):
        cfg = build_config(preset, "fast", "full", device_type="cpu")
        assert execution(cfg) == ("device", precision, True, "off", 0, "eager")
    assert calls == [native, native]  # asked once per build, on the CPU


@pytest.mark.parametrize("native", [True, False])
def test_fast_on_cuda_is_bf16_compiled_with_a_warm_up_whatever_the_host_cpu(cpu_with, native):
    cpu_with(native)  # the host CPU's bf16 changes nothing on the GPU
    cfg = build_config("fast4", "fast", "full", device_type="cuda")
    assert execution(cfg) == ("device", "bf16", True, "default", 3, "eager")


@pytest.mark.parametrize("device_type, native", [("cpu", True), ("cpu", False), ("cuda", False)])
def test_eager_is_the_reference_notebooks_way_on_every_machine(cpu_with, device_type, native):
    cpu_with(native)
    cfg = build_config("fast4", "eager", "full", device_type=device_type)
    assert execution(cfg) == ("dataloader", "fp32", False, "off", 0, "eager")


@pytest.mark.parametrize("device_type, native", [("cpu", True), ("cpu", False), ("cuda", False)])
def test_a_variant_changes_how_not_what(cpu_with, device_type, native):
    """Every machine's variants keep the recipe: the same recipe sections and recipe name as the preset alone."""
    cpu_with(native)
    plain = build_config("fast4", None, "full", device_type=device_type)
    for variant in ("fast", "eager"):
        cfg = build_config("fast4", variant, "full", device_type=device_type)
        assert (cfg.preset, cfg.aug, cfg.init, cfg.optim, cfg.train.epochs, cfg.train.tta) == (
            plain.preset, plain.aug, plain.init, plain.optim, plain.train.epochs, plain.train.tta)
