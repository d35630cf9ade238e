"""Fused BatchNorm2d + ReLU in Triton: training and eval forward, backward; a torch.library custom op; a module.

x is viewed as an (M, C) matrix, M = N * H * W, through its strides, so NCHW and channels-last inputs
run without a copy. Each program owns BLOCK_C channels and a slice of M, looping over it in
(BLOCK_M, BLOCK_C) tiles. Statistics are accumulated in fp32 (fp64 for fp64 input) from x minus a
per-channel shift (one sample of that channel), which keeps E[d^2] - E[d]^2 accurate when |mean| >> std.

Memory traffic per pass (b = bytes per element of x, E = N*C*H*W elements):
  training forward: stats read x (E*b), apply reads x and writes y (2*E*b)          -> 3*E*b
  eval forward: apply only                                                           -> 2*E*b
  backward: reduce reads x, dy (2*E*b); dx reads x, dy and writes dx (3*E*b)         -> 5*E*b
ReLU's mask is recomputed from x in backward instead of saved: backward must read x for x-hat anyway,
so recomputing is free in memory traffic, while a saved mask would add a write and a read.
Eager BatchNorm2d + ReLU moves 2*E*b (stats, Welford) + 2*E*b (normalise) + 2*E*b (ReLU) forward.

On CPU tensors the kernels run in Triton's interpreter, which must be chosen (TRITON_INTERPRET=1)
before this module is imported; `BatchNormReLU2d(backend="triton")` says so when it was not.
"""
from __future__ import annotations

import torch
from torch import nn

from .reference import bn_relu_reference

try:
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # CPU machines without the triton package: the reference backend still works
    HAS_TRITON = False

if HAS_TRITON:
    @triton.jit
    def _tile_offsets(m0, pid_c, m_end, C, HW, stride_n, stride_c, stride_hw,
                      BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        """Element offsets (BLOCK_M, BLOCK_C) of rows m0.. of the (M, C) view, and their mask."""
        ms = m0 + tl.arange(0, BLOCK_M)
        cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        n = ms // HW
        hw = ms % HW
        offs = n[:, None] * stride_n + hw[:, None] * stride_hw + cs[None, :] * stride_c
        mask = (ms < m_end)[:, None] & (cs < C)[None, :]
        return offs, mask

    @triton.jit
    def _bn_relu_fwd_stats_kernel(
        x_ptr,  # (N, C, H, W) any dense layout, fp32/fp16/bf16
        shift_ptr,  # (C,) fp32: x[0, c, 0, 0], subtracted before summing
        psum_ptr, psumsq_ptr,  # (SPLIT, C) fp32 partial sums of d = x - shift and d^2
        M, C, HW, stride_n, stride_c, stride_hw, m_per_prog,
        BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        pid_c, pid_s = tl.program_id(0), tl.program_id(1)
        cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        acc_ty = psum_ptr.dtype.element_ty
        shift = tl.load(shift_ptr + cs, mask=cs < C, other=0.0)
        acc = tl.zeros((BLOCK_M, BLOCK_C), acc_ty)
        acc2 = tl.zeros((BLOCK_M, BLOCK_C), acc_ty)
        m_start = pid_s * m_per_prog
        m_end = tl.minimum(m_start + m_per_prog, M)
        for m0 in range(m_start, m_end, BLOCK_M):
            offs, mask = _tile_offsets(m0, pid_c, m_end, C, HW, stride_n, stride_c, stride_hw, BLOCK_M, BLOCK_C)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            d = tl.where(mask, x - shift[None, :], 0.0)
            acc += d
            acc2 += d * d
        tl.store(psum_ptr + pid_s * C + cs, tl.sum(acc, 0), mask=cs < C)
        tl.store(psumsq_ptr + pid_s * C + cs, tl.sum(acc2, 0), mask=cs < C)

    @triton.jit
    def _bn_relu_fwd_finalize_kernel(
        psum_ptr, psumsq_ptr,  # (SPLIT, C) fp32
        shift_ptr,  # (C,) fp32
        mean_ptr, rstd_ptr,  # (C,) fp32 outputs, saved for backward
        running_mean_ptr, running_var_ptr,  # (C,) fp32 running statistics before this batch
        new_mean_ptr, new_var_ptr,  # (C,) fp32 outputs: running statistics after this batch
        SPLIT, C, M, eps, momentum,
        BLOCK_C: tl.constexpr,
    ):
        cs = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cs < C
        s = tl.zeros((BLOCK_C,), psum_ptr.dtype.element_ty)
        s2 = tl.zeros((BLOCK_C,), psum_ptr.dtype.element_ty)
        for i in range(0, SPLIT):
            s += tl.load(psum_ptr + i * C + cs, mask=cmask, other=0.0)
            s2 += tl.load(psumsq_ptr + i * C + cs, mask=cmask, other=0.0)
        mean_d = s / M
        var = tl.maximum(s2 / M - mean_d * mean_d, 0.0)  # biased, normalises the batch
        mean = tl.load(shift_ptr + cs, mask=cmask, other=0.0) + mean_d
        tl.store(mean_ptr + cs, mean, mask=cmask)
        tl.store(rstd_ptr + cs, 1.0 / tl.sqrt(var + eps), mask=cmask)
        rm = tl.load(running_mean_ptr + cs, mask=cmask, other=0.0)
        rv = tl.load(running_var_ptr + cs, mask=cmask, other=0.0)
        tl.store(new_mean_ptr + cs, rm * (1.0 - momentum) + mean * momentum, mask=cmask)
        unbiased = var * M / (M - 1)  # in var's dtype: (M / (M - 1.0)) would be rounded to fp32
        tl.store(new_var_ptr + cs, rv * (1.0 - momentum) + unbiased * momentum, mask=cmask)

    @triton.jit
    def _bn_relu_fwd_apply_kernel(
        x_ptr, y_ptr,  # (N, C, H, W), same layout
        mean_ptr, rstd_ptr, weight_ptr, bias_ptr,  # (C,) fp32
        M, C, HW, stride_n, stride_c, stride_hw, m_per_prog,
        BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        pid_c, pid_s = tl.program_id(0), tl.program_id(1)
        cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cs < C
        scale = tl.load(rstd_ptr + cs, mask=cmask, other=0.0) * tl.load(weight_ptr + cs, mask=cmask, other=0.0)
        shift = tl.load(bias_ptr + cs, mask=cmask, other=0.0) - tl.load(mean_ptr + cs, mask=cmask, other=0.0) * scale
        m_start = pid_s * m_per_prog
        m_end = tl.minimum(m_start + m_per_prog, M)
        for m0 in range(m_start, m_end, BLOCK_M):
            offs, mask = _tile_offsets(m0, pid_c, m_end, C, HW, stride_n, stride_c, stride_hw, BLOCK_M, BLOCK_C)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(mean_ptr.dtype.element_ty)
            y = tl.maximum(x * scale[None, :] + shift[None, :], 0.0)
            tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _bn_relu_bwd_reduce_kernel(
        dy_ptr, x_ptr,  # (N, C, H, W), same layout
        mean_ptr, rstd_ptr, weight_ptr, bias_ptr,  # (C,) fp32
        pdb_ptr, pdw_ptr,  # (SPLIT, C) fp32 partial sums of dz and dz * x_hat, dz = dy * (z > 0)
        M, C, HW, stride_n, stride_c, stride_hw, m_per_prog,
        BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        pid_c, pid_s = tl.program_id(0), tl.program_id(1)
        cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cs < C
        mean = tl.load(mean_ptr + cs, mask=cmask, other=0.0)
        rstd = tl.load(rstd_ptr + cs, mask=cmask, other=0.0)
        w = tl.load(weight_ptr + cs, mask=cmask, other=0.0)
        b = tl.load(bias_ptr + cs, mask=cmask, other=0.0)
        acc_ty = pdb_ptr.dtype.element_ty
        acc_db = tl.zeros((BLOCK_M, BLOCK_C), acc_ty)
        acc_dw = tl.zeros((BLOCK_M, BLOCK_C), acc_ty)
        m_start = pid_s * m_per_prog
        m_end = tl.minimum(m_start + m_per_prog, M)
        for m0 in range(m_start, m_end, BLOCK_M):
            offs, mask = _tile_offsets(m0, pid_c, m_end, C, HW, stride_n, stride_c, stride_hw, BLOCK_M, BLOCK_C)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            xhat = (x - mean[None, :]) * rstd[None, :]
            dz = tl.where(mask & (xhat * w[None, :] + b[None, :] > 0), dy, 0.0)
            acc_db += dz
            acc_dw += dz * xhat
        tl.store(pdb_ptr + pid_s * C + cs, tl.sum(acc_db, 0), mask=cmask)
        tl.store(pdw_ptr + pid_s * C + cs, tl.sum(acc_dw, 0), mask=cmask)

    @triton.jit
    def _bn_relu_bwd_dx_kernel(
        dy_ptr, x_ptr, dx_ptr,  # (N, C, H, W), same layout
        mean_ptr, rstd_ptr, weight_ptr, bias_ptr,  # (C,) fp32
        pdb_ptr, pdw_ptr,  # (SPLIT, C) fp32 partials from the reduce kernel
        dweight_ptr, dbias_ptr,  # (C,) fp32 outputs, written by the programs with pid_s == 0
        SPLIT, M, C, HW, stride_n, stride_c, stride_hw, m_per_prog,
        TRAINING: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        pid_c, pid_s = tl.program_id(0), tl.program_id(1)
        cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cs < C
        acc_ty = pdb_ptr.dtype.element_ty
        db = tl.zeros((BLOCK_C,), acc_ty)
        dw = tl.zeros((BLOCK_C,), acc_ty)
        for i in range(0, SPLIT):
            db += tl.load(pdb_ptr + i * C + cs, mask=cmask, other=0.0)
            dw += tl.load(pdw_ptr + i * C + cs, mask=cmask, other=0.0)
        if pid_s == 0:
            tl.store(dbias_ptr + cs, db, mask=cmask)
            tl.store(dweight_ptr + cs, dw, mask=cmask)
        mean = tl.load(mean_ptr + cs, mask=cmask, other=0.0)
        rstd = tl.load(rstd_ptr + cs, mask=cmask, other=0.0)
        w = tl.load(weight_ptr + cs, mask=cmask, other=0.0)
        b = tl.load(bias_ptr + cs, mask=cmask, other=0.0)
        k = w * rstd
        m_start = pid_s * m_per_prog
        m_end = tl.minimum(m_start + m_per_prog, M)
        for m0 in range(m_start, m_end, BLOCK_M):
            offs, mask = _tile_offsets(m0, pid_c, m_end, C, HW, stride_n, stride_c, stride_hw, BLOCK_M, BLOCK_C)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            xhat = (x - mean[None, :]) * rstd[None, :]
            dz = tl.where(xhat * w[None, :] + b[None, :] > 0, dy, 0.0)
            if TRAINING:  # batch statistics depend on x: dx = w*rstd*(dz - mean(dz) - xhat*mean(dz*xhat))
                dx = k[None, :] * (dz - db[None, :] / M - xhat * (dw[None, :] / M))
            else:  # running statistics are constants
                dx = k[None, :] * dz
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---- launch geometry ---------------------------------------------------------------------------

# Triton decides at decoration time whether a kernel is compiled or interpreted.
INTERPRETED = HAS_TRITON and type(_bn_relu_fwd_apply_kernel).__name__ == "InterpretedFunction"


def _interpreted() -> bool:
    return INTERPRETED


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels-last when x is (or is closest to) channels-last, else contiguous NCHW."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _dense(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=_memory_format(x))


def _geometry(x: torch.Tensor) -> dict:
    """Strides of the (M, C) view and block sizes. Large tiles and no M split in the interpreter
    (its cost is per program and per loop step); on a GPU enough programs to fill the SMs."""
    n, c, h, w = x.shape
    m, hw = n * h * w, h * w
    s_n, s_c, _, s_w = x.stride()
    channels_last = s_c == 1 and c > 1
    block_c = min(triton.next_power_of_2(c), 64 if channels_last else (64 if _interpreted() else 4))
    elems = 16384 if _interpreted() else 4096
    block_m = max(16, min(triton.next_power_of_2(m), elems // block_c))
    c_blocks = triton.cdiv(c, block_c)
    m_blocks = triton.cdiv(m, block_m)
    if _interpreted() or x.device.type != "cuda":
        split = 1
    else:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        split = max(1, min(m_blocks, (4 * sms) // c_blocks))
    m_per_prog = triton.cdiv(m_blocks, split) * block_m
    split = triton.cdiv(m, m_per_prog)
    return dict(M=m, C=c, HW=hw, stride_n=s_n, stride_c=s_c, stride_hw=s_w, m_per_prog=m_per_prog,
                BLOCK_M=block_m, BLOCK_C=block_c, grid=(c_blocks, split), split=split)


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics and per-channel tensors: fp64 for fp64 input (exact comparisons in tests), fp32 otherwise."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_triton(x: torch.Tensor) -> None:
    if not HAS_TRITON:
        raise RuntimeError("backend='triton' needs the triton package (pip install triton); "
                           "use backend='reference' or 'auto' without it")
    if x.device.type == "cpu" and not _interpreted():
        raise RuntimeError("Triton kernels on CPU tensors run only in Triton's interpreter: set TRITON_INTERPRET=1 "
                           "in the environment before kernels.bn_relu is imported, or use backend='reference'")
    if x.numel() >= 2**31:
        raise ValueError(f"input of {x.numel():,} elements exceeds the kernels' int32 offsets")


def bn_relu_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                    running_var: torch.Tensor, training: bool, momentum: float, eps: float):
    """Launch the forward kernels. x: (N, C, H, W); weight, bias, running stats: (C,) fp32 (not modified).
    Returns y (x's dtype and layout), mean and rstd (C,) fp32 used to normalise (saved for backward), and
    the running mean and var after this batch (new tensors; copies of the old ones in eval mode)."""
    _check_triton(x)
    x = _dense(x)
    g = _geometry(x)
    y = torch.empty_like(x)
    if training:
        if g["M"] < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        acc = _acc_dtype(x)
        shift = x[0, :, 0, 0].to(acc).contiguous()
        psum = torch.empty((g["split"], g["C"]), device=x.device, dtype=acc)
        psumsq = torch.empty_like(psum)
        mean = torch.empty(g["C"], device=x.device, dtype=acc)
        rstd = torch.empty_like(mean)
        new_mean, new_var = torch.empty_like(running_mean), torch.empty_like(running_var)
        _bn_relu_fwd_stats_kernel[g["grid"]](x, shift, psum, psumsq, g["M"], g["C"], g["HW"], g["stride_n"],
                                             g["stride_c"], g["stride_hw"], g["m_per_prog"],
                                             BLOCK_M=g["BLOCK_M"], BLOCK_C=g["BLOCK_C"])
        _bn_relu_fwd_finalize_kernel[(g["grid"][0],)](psum, psumsq, shift, mean, rstd, running_mean, running_var,
                                                      new_mean, new_var, g["split"], g["C"], g["M"], eps, momentum, BLOCK_C=g["BLOCK_C"])
    else:
        mean = running_mean.to(_acc_dtype(x)).clone()
        rstd = torch.rsqrt(running_var.to(_acc_dtype(x)) + eps)
        new_mean, new_var = running_mean.clone(), running_var.clone()
    _bn_relu_fwd_apply_kernel[g["grid"]](x, y, mean, rstd, weight, bias, g["M"], g["C"], g["HW"], g["stride_n"],
                                         g["stride_c"], g["stride_hw"], g["m_per_prog"],
                                         BLOCK_M=g["BLOCK_M"], BLOCK_C=g["BLOCK_C"])
    return y, mean, rstd, new_mean, new_var


def bn_relu_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     mean: torch.Tensor, rstd: torch.Tensor, training: bool):
    """Launch the backward kernels. dy, x: (N, C, H, W); the rest (C,) fp32. Returns dx, dweight, dbias."""
    _check_triton(x)
    x = _dense(x)
    dy = dy.contiguous(memory_format=_memory_format(x))  # the kernels index both with x's strides
    g = _geometry(x)
    dx = torch.empty_like(x)
    pdb = torch.empty((g["split"], g["C"]), device=x.device, dtype=_acc_dtype(x))
    pdw = torch.empty_like(pdb)
    dweight = torch.empty(g["C"], device=x.device, dtype=_acc_dtype(x))
    dbias = torch.empty_like(dweight)
    common = (g["M"], g["C"], g["HW"], g["stride_n"], g["stride_c"], g["stride_hw"], g["m_per_prog"])
    _bn_relu_bwd_reduce_kernel[g["grid"]](dy, x, mean, rstd, weight, bias, pdb, pdw, *common,
                                          BLOCK_M=g["BLOCK_M"], BLOCK_C=g["BLOCK_C"])
    _bn_relu_bwd_dx_kernel[g["grid"]](dy, x, dx, mean, rstd, weight, bias, pdb, pdw, dweight, dbias, g["split"],
                                      *common, TRAINING=training, BLOCK_M=g["BLOCK_M"], BLOCK_C=g["BLOCK_C"])
    return dx, dweight, dbias


# ---- custom ops: opaque to torch.compile, differentiable through register_autograd ------------------

def _out_like(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))


# Functional (autograd needs it): the new running statistics are outputs, copied into the buffers by the module.
@torch.library.custom_op("speedrun::bn_relu_fwd", mutates_args=())
def bn_relu_fwd_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                   running_var: torch.Tensor, training: bool, momentum: float, eps: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return bn_relu_forward(x, weight, bias, running_mean, running_var, training, momentum, eps)


@bn_relu_fwd_op.register_fake
def _(x, weight, bias, running_mean, running_var, training, momentum, eps):
    stat = lambda: x.new_empty(x.shape[1], dtype=_acc_dtype(x))  # noqa: E731
    return _out_like(x), stat(), stat(), torch.empty_like(running_mean), torch.empty_like(running_var)


@torch.library.custom_op("speedrun::bn_relu_bwd", mutates_args=())
def bn_relu_bwd_op(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                   rstd: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return bn_relu_backward(dy, x, weight, bias, mean, rstd, training)


@bn_relu_bwd_op.register_fake
def _(dy, x, weight, bias, mean, rstd, training):
    return _out_like(x), x.new_empty(x.shape[1], dtype=_acc_dtype(x)), x.new_empty(x.shape[1], dtype=_acc_dtype(x))


def _setup_context(ctx, inputs, output):
    x, weight, bias, _, _, training, _, _ = inputs
    _, mean, rstd, _, _ = output
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.training = training


def _backward(ctx, dy, *_unused_grads):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    dx, dweight, dbias = bn_relu_bwd_op(dy, x, weight, bias, mean, rstd, ctx.training)
    return dx, dweight.to(weight.dtype), dbias.to(bias.dtype), None, None, None, None, None


bn_relu_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ---- module ------------------------------------------------------------------------------------

class BatchNormReLU2d(nn.BatchNorm2d):
    """Drop-in for nn.Sequential(nn.BatchNorm2d(C), nn.ReLU()) with BatchNorm2d's parameters and state_dict keys.

    backend: "triton" always runs the kernels (error where Triton cannot run), "reference" the pure-PyTorch
    reference, "auto" Triton on CUDA and the reference elsewhere.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, backend: str = "auto"):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=True)
        if backend not in ("auto", "triton", "reference"):
            raise ValueError(f"backend={backend!r}; choose auto, triton or reference")
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"BatchNormReLU2d expects (N, C, H, W) input, got {x.dim()} dims")
        if self.training:
            self.num_batches_tracked.add_(1)
            momentum = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
        else:
            momentum = 0.0
        use_triton = self.backend == "triton" or (self.backend == "auto" and x.is_cuda and HAS_TRITON)
        if not use_triton:
            return bn_relu_reference(x, self.weight, self.bias, self.running_mean, self.running_var,
                                     self.training, momentum, self.eps)
        y, _, _, new_mean, new_var = bn_relu_fwd_op(x, self.weight, self.bias, self.running_mean,
                                                    self.running_var, self.training, momentum, self.eps)
        if self.training:
            with torch.no_grad():
                self.running_mean.copy_(new_mean)
                self.running_var.copy_(new_var)
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend}"
