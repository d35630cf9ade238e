"""CustomResNet: the ResNet-9 of the reference, 6,575,370 parameters (all convs with bias).

prep conv 64 -> [conv 128, pool, norm, ReLU] + res(128) -> [conv 256, pool, norm, ReLU]
-> [conv 512, pool, norm, ReLU] + res(512) -> maxpool 4 -> linear 10. The output is logits;
the softmax lives in the loss (cross-entropy), `predict_proba` applies it explicitly.
"""
from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

NormAct = Callable[[int], nn.Module]


def norm_act_factory(norm: str = "bn", kernel: str = "eager", dropout: float = 0.0) -> NormAct:
    """A function C -> module doing norm + ReLU (+ dropout); the model never looks at globals."""
    def make(channels: int) -> nn.Module:
        if norm == "bn" and kernel == "triton":
            if not torch.cuda.is_available():  # Triton on CPU tensors: its interpreter, chosen before kernels load
                os.environ.setdefault("TRITON_INTERPRET", "1")
            from kernels.bn_relu import BatchNormReLU2d
            layers: list[nn.Module] = [BatchNormReLU2d(channels, backend="triton")]
        else:
            norm_layer = {"bn": lambda c: nn.BatchNorm2d(c),
                          "gn": lambda c: nn.GroupNorm(min(32, c), c),
                          "ln": lambda c: nn.GroupNorm(1, c)}[norm](channels)
            layers = [norm_layer, nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        return nn.Sequential(*layers)
    return make


class ConvBlock(nn.Sequential):
    """conv 3x3 (bias) -> [maxpool 2] -> norm -> ReLU."""

    def __init__(self, c_in: int, c_out: int, norm_act: NormAct, pool: bool = False):
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=True)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        layers.append(norm_act(c_out))
        super().__init__(*layers)


class Residual(nn.Module):
    """x + (conv-norm-ReLU x 2)(x)."""

    def __init__(self, channels: int, norm_act: NormAct):
        super().__init__()
        self.body = nn.Sequential(ConvBlock(channels, channels, norm_act), ConvBlock(channels, channels, norm_act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CustomResNet(nn.Module):
    def __init__(self, norm_act: NormAct | None = None, num_classes: int = 10, logit_scale: float = 1.0):
        super().__init__()
        norm_act = norm_act or norm_act_factory()
        self.prep = ConvBlock(3, 64, norm_act)  # (B, 64, 32, 32)
        self.layer1 = nn.Sequential(ConvBlock(64, 128, norm_act, pool=True), Residual(128, norm_act))  # (B, 128, 16, 16)
        self.layer2 = ConvBlock(128, 256, norm_act, pool=True)  # (B, 256, 8, 8)
        self.layer3 = nn.Sequential(ConvBlock(256, 512, norm_act, pool=True), Residual(512, norm_act))  # (B, 512, 4, 4)
        self.pool = nn.MaxPool2d(4)  # (B, 512, 1, 1)
        self.fc = nn.Linear(512, num_classes)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.fc(torch.flatten(self.pool(x), 1)) * self.logit_scale  # (B, 10) logits

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x).float(), dim=1)
