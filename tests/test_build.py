"""Building a run's model (model/build.py): the config's network in the asked memory format with fp32 parameters, the
autocast context of each precision, and torch.compile as a transform (a whole-step graph run's evaluation model
compiles as default)."""
import torch

from bench.core.variants import build_config
from model.build import autocast, build_model


def test_build_model_follows_the_config_and_the_asked_layout_with_fp32_parameters():
    """The norm, dropout and logit scale the config names; channels-last when asked, NCHW otherwise; fp32 weights
    (a bf16 run lowers the compute by autocast, not the parameters)."""
    cfg = build_config("seed", "eager", "full", {"model.norm": "gn", "model.dropout": "0.1",
                                                 "model.logit_scale": "0.125"}, "cpu")
    for channels_last in (True, False):
        model = build_model(cfg.model, torch.device("cpu"), channels_last=channels_last)
        assert model.logit_scale == 0.125
        assert sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules()) == 8
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in model.modules()) == 8
        assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
        filters = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(filters) == 8
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert all(w.is_contiguous(memory_format=layout) for w in filters), channels_last
        assert channels_last == all(not w.is_contiguous() for w in filters)  # 3x3 filters: the two layouts differ


def test_autocast_computes_in_the_precision_and_fp32_is_no_autocast():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    cpu = torch.device("cpu")
    with autocast(cpu, "bf16"):
        assert torch.mm(a, b).dtype == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu") and torch.mm(a, b).dtype == torch.float32


def test_the_evaluation_model_of_a_whole_step_graph_run_compiles_as_default():
    """compile=graph is a step mode: train() compiles its evaluation model with the run's mode, and torch.compile
    has no mode "graph" (it raised `Unrecognized mode=graph` on the GPU). The model alone compiles as default."""
    import torch._dynamo
    from model.build import compile_model
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten()).eval()
    x = torch.randn(2, 3, 6, 6)
    compiled = compile_model(model, "graph")
    assert compiled is not model
    torch.testing.assert_close(compiled(x), model(x))
