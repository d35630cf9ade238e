"""Building the model for a run: from its config onto the device in its memory format, compiled, and the autocast
context of its precision."""
from __future__ import annotations

import torch
from torch import nn

from .resnet import CustomResNet, norm_act_factory

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_model(model_cfg, device: torch.device, channels_last: bool) -> CustomResNet:
    """CustomResNet as the config says, on `device`, in channels-last when asked (parameters stay fp32)."""
    norm_act = norm_act_factory(model_cfg.norm, model_cfg.norm_kernel, model_cfg.dropout)
    model = CustomResNet(norm_act, logit_scale=model_cfg.logit_scale).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_model(model: nn.Module, mode: str) -> nn.Module:
    """torch.compile as a transform ('off' returns the model itself); the graph must be whole (fullgraph), and
    static: each input shape its own graph, compiled in the warm-up (a dynamic graph would replace the static ones
    once a second size is seen, and run slower). 'graph' is a training-step mode (the whole step captured as one
    CUDA graph, bench/core/step.py); a model alone, as the evaluation's, compiles as 'default' under it."""
    if mode == "off":
        return model
    return torch.compile(model, mode=None if mode in ("default", "graph") else mode, fullgraph=True, dynamic=False)


def autocast(device: torch.device, precision: str):
    """The autocast context for `precision` (disabled for fp32)."""
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision], enabled=precision != "fp32")
