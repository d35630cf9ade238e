"""Muon on the conv filters, with a device LR: `optim.muon_lr` > 0 (airbench's 94% in 8 epochs; Jordan et al.).

Why not `torch.optim.Muon` itself: it refuses 4-D parameters (a conv filter must be viewed as (out, in*kh*kw), and a
view is not a leaf the optimizer can hold), and it passes its LR to `add_` as `alpha`, a Python scalar, so the device
LR tensor our step keeps would be read on the host for every filter at every step. What it ships is used: its
Newton-Schulz iteration (`_zeropower_via_newtonschulz`, bf16, Jordan's quintic coefficients) and its momentum form
(an EMA buffer, the Nesterov update `grad.lerp(buf, momentum)`); a test checks the two agree step by step.

Added, as airbench does: before each step a filter is scaled to Frobenius norm sqrt(out channels). Every conv of the
network feeds a norm layer, so a filter's scale changes nothing the network computes; fixing it keeps the step size,
relative to the filter, what the LR says (otherwise the orthogonal steps grow the filters and the LR decays with it).
No weight decay on the filters (it would only shrink a norm that is reset anyway).
"""
from __future__ import annotations

import torch

try:
    from torch.optim import _muon as torch_muon
except ImportError:  # torch before 2.9 has no Muon: preflight refuses optim.muon_lr > 0 there
    torch_muon = None


class FilterMuon(torch.optim.Optimizer):
    """Muon over 4-D conv filters; `lr` may be a 0-dim device tensor (read on the device only). The momentum buffers
    exist from construction, as zeros (what a first step would start from): a compiled update sees one state
    structure from its first call."""

    def __init__(self, params, lr: float | torch.Tensor, momentum: float, ns_steps: int):
        super().__init__(params, dict(lr=lr, momentum=momentum, ns_steps=ns_steps))
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 4:
                    raise ValueError(f"FilterMuon takes conv filters (4-D), got a parameter of shape {tuple(p.shape)}")
                self.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p]["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum)  # Nesterov
                ortho = torch_muon._zeropower_via_newtonschulz(  # (out, in*kh*kw), bf16
                    update.reshape(len(p), -1), (torch_muon.DEFAULT_A, torch_muon.DEFAULT_B, torch_muon.DEFAULT_C),
                    group["ns_steps"], torch_muon.EPS)
                p.mul_(len(p) ** 0.5 / p.norm())  # Frobenius norm sqrt(out): a scale the next norm layer removes
                p.sub_(ortho.reshape(p.shape).to(p.dtype) * lr)
        return None
