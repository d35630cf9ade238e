"""Recipe initialisations of the CustomResNet's convolutions; the network's modules and shapes stay as they are.

- `whiten_conv_`: the first conv's filters become +- the eigenvectors of the training images' patch covariance,
  scaled by 1/sqrt(eigenvalue + eps), so its outputs start decorrelated with unit variance (Page's ResNet-9 "bag of
  tricks"; airbench, which freezes them). A 3x3 conv on 3 channels has 27 directions, so 54 filters; the rest keep
  their default initialisation.
- `freeze_norm_scales_`: the norm layers' scales fixed at 1 and left out of training (Page's ResNet-9, airbench); with
  the scale gone, each channel's size after the norm is set by its bias alone, which they train at 64x the LR.
- `dirac_convs_`: every other conv starts as the identity on its first min(C_in, C_out) output channels (airbench),
  so a fresh network passes its input through and early steps train a near-linear path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)  # the fused BatchNormReLU2d is a BatchNorm2d


def patch_covariance(images: torch.Tensor, kernel: int, chunk: int = 500) -> torch.Tensor:
    """(N, C, H, W) float images -> (C*k*k, C*k*k) fp64 covariance of all k x k patches (valid positions)."""
    d = images.shape[1] * kernel * kernel
    total = torch.zeros(d, d, dtype=torch.float64, device=images.device)
    mean = torch.zeros(d, dtype=torch.float64, device=images.device)
    count = 0
    for i in range(0, len(images), chunk):
        p = F.unfold(images[i:i + chunk].double(), kernel)  # (n, d, L) patches as columns
        p = p.transpose(1, 2).reshape(-1, d)  # (n * L, d)
        total += p.T @ p
        mean += p.sum(0)
        count += len(p)
    mean /= count
    return total / count - torch.outer(mean, mean)


@torch.no_grad()
def whiten_conv_(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> torch.Tensor:
    """Set the first 2 * C*k*k filters of `conv` to +-whitening directions of `images`' patches (bias 0).

    images: (N, C, H, W) normalised float images. Returns the eigenvalues (ascending). The filters keep the
    conv's dtype and memory format (in-place copy).
    """
    c_out, c_in, kh, kw = conv.weight.shape
    assert kh == kw and c_in == images.shape[1], "a square kernel over the images' channels"
    d = c_in * kh * kw
    if c_out < 2 * d:
        raise ValueError(f"whitening needs {2 * d} filters for {d} patch directions; the conv has {c_out}")
    eigvals, eigvecs = torch.linalg.eigh(patch_covariance(images, kh))  # ascending; columns are eigenvectors
    filters = (eigvecs.T / torch.sqrt(eigvals.clamp_min(0) + eps)[:, None]).reshape(d, c_in, kh, kw)
    conv.weight[:2 * d].copy_(torch.cat([filters, -filters]).to(conv.weight.dtype))
    if conv.bias is not None:
        conv.bias[:2 * d].zero_()
    return eigvals


@torch.no_grad()
def dirac_conv_(conv: nn.Conv2d) -> None:
    """Identity on the first min(C_in, C_out) output channels; the others keep their initialisation."""
    n = min(conv.in_channels, conv.out_channels)
    w = torch.zeros_like(conv.weight[:n])
    nn.init.dirac_(w)
    conv.weight[:n].copy_(w)


def dirac_convs_(model: nn.Module, skip: nn.Module | None = None) -> int:
    """dirac_conv_ on every Conv2d of `model` except those inside `skip`; returns how many were set."""
    skipped = set(map(id, skip.modules())) if skip is not None else set()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and id(m) not in skipped]
    for conv in convs:
        dirac_conv_(conv)
    return len(convs)


@torch.no_grad()
def freeze_norm_scales_(model: nn.Module) -> int:
    """Every norm layer's scale set to 1 and frozen (requires_grad False); returns how many were frozen."""
    layers = [m for m in model.modules() if isinstance(m, NORM_LAYERS) and m.weight is not None]
    for m in layers:
        m.weight.fill_(1.0)
        m.weight.requires_grad_(False)
    return len(layers)
