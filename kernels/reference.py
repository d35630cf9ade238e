"""Pure-PyTorch BatchNorm+ReLU: the reference every Triton kernel is checked against, and the CPU backend."""
from __future__ import annotations

import torch


def bn_relu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                      running_var: torch.Tensor, training: bool, momentum: float, eps: float) -> torch.Tensor:
    """relu(batch_norm(x)) with explicit statistics in fp32 (or fp64 for fp64 input); updates running stats in place.

    x: (N, C, H, W). Training: biased batch variance to normalise, unbiased into running_var (PyTorch semantics).
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(acc)
    if training:
        m = x.numel() // x.shape[1]
        if m < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        mean = xf.mean((0, 2, 3))
        var = xf.var((0, 2, 3), unbiased=False)
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.detach().to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1 - momentum).add_((var.detach() * m / (m - 1)).to(running_var.dtype), alpha=momentum)
    else:
        mean, var = running_mean.to(acc), running_var.to(acc)
    scale = weight.to(acc) * torch.rsqrt(var + eps)
    shift = bias.to(acc) - mean * scale
    y = torch.relu(xf * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    return y.to(x.dtype)
