"""Fused BatchNorm2d + ReLU in Triton: training and eval forward, backward; a torch.library op; a module.

Layout. x (N, C, H, W) is read as x[o, c, i] with strides (s_o, s_c, s_i). Channels-last (the layout `fast`
uses) is a row-major (M, C) matrix, M = N*H*W: O = 1, I = M, s_i = C, s_c = 1. NCHW is O = N, I = H*W,
s_i = 1. Programs walk (BLOCK_I, BLOCK_C) tiles; a tile's (o, i0) comes from one scalar division per tile,
never per element. Triton specializes the stride equal to 1, so the contiguous axis gets wide vector loads.

Passes (E = N*C*H*W elements, b bytes each; P = SPLIT*C partials, tiny):
  | pass            | kernels                                      | DRAM bytes | launches                  |
  | training fwd    | stats+finalize (reads x), apply (x -> y)     | 3*E*b      | 2 + 1 ticket memset       |
  | eval fwd        | apply (x -> y)                               | 2*E*b      | 1                         |
  | backward        | reduce+finalize (x, dy), dx (x, dy -> dx)    | 5*E*b      | 2 + 1 ticket memset       |
Eager BatchNorm2d + ReLU forward moves 5*E*b (stats, normalise, in-place ReLU), its backward 5*E*b too.

Statistics are a split reduction: SPLIT programs per channel block (about 4 per SM over all blocks) each sum
a contiguous range of row tiles (fp32 accumulators; fp64 for fp64 input) and store one partial row. Each then
takes a ticket from a per-block atomic counter; the last to arrive sums the (SPLIT, BLOCK_C) partials in
(FINAL_ROWS <= 64, BLOCK_C) chunks, vectorised, and writes the per-channel results (mean, rstd, running
statistics; or dweight, dbias). This is ATen's channels-last scheme (staging buffer + semaphore, last block
finishes) and Inductor's cooperative-reduction barrier (debug_barrier, then an acq_rel atomic). The chunk, not
SPLIT, sizes the finaliser: one (256, 64) tile set the whole kernel's registers (139 stats / 165 reduce at sm_90,
3 programs per SM; spills at NCHW 4x4), chunks give 96 / 128 (`make kernels-static`, docs/kernels-static.md).
Nobody re-reads partials per element: the elementwise kernels load a few (C,) vectors and apply per-channel
coefficients.
Sums are of d = x - x[0, c, 0] (a sample of the channel), which keeps E[d^2] - E[d]^2 accurate when
|mean| >> std. The tickets are a fresh zeroed int32 per channel block each call (one memset); a persistent,
self-resetting counter would save it but make the op stateful, which functionalization would then copy.

The ReLU mask in backward is recomputed from x and the saved (mean, rstd) exactly as forward computed it
(same per-channel scale and shift, same expression), so it matches forward's mask bit for bit; saving y or
a mask would cost an extra write and read.

Float scalars (momentum, eps) are annotated tl.float64: compiled Triton would otherwise type a Python float
as fp32 (0.1 -> 0.10000000149) and fp64 statistics would be off; each is cast to the statistics' dtype
in-kernel. The CPU interpreter passes Python floats through as doubles, so tests check the annotations.

On CUDA the op is a torch.library.triton_op (torch.compile traces into it, CUDA graphs capture it); on CPU
tensors the kernels run in Triton's interpreter (TRITON_INTERPRET=1 before this module is imported)
behind a torch.library.custom_op, which triton_op cannot serve there.
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
    def _tile(t, pid_c, C, I, TI, s_o, s_c, s_i, BLOCK_I: tl.constexpr, BLOCK_C: tl.constexpr):
        """Offsets (BLOCK_I, BLOCK_C) and mask of row tile t of channel block pid_c; TI tiles per o."""
        o = t // TI  # one scalar division per tile
        i = (t - o * TI) * BLOCK_I + tl.arange(0, BLOCK_I)
        cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        offs = o * s_o + i[:, None] * s_i + cs[None, :] * s_c
        return offs, (i < I)[:, None] & (cs < C)[None, :]

    @triton.jit
    def _last_ticket(ticket_ptr, pid_c, split):
        """True in the last program of channel block pid_c to finish storing its partials."""
        tl.debug_barrier()  # every thread's partial stores precede the (single-thread) release below
        ticket = tl.atomic_add(ticket_ptr + pid_c, 1, sem="acq_rel")
        return ticket == split - 1

    @triton.jit
    def _sum_partials(part_ptr, row0, split, C, cs, FINAL_ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
        """Sum rows row0 .. row0 + split of a (rows, C) partial buffer at channels cs, FINAL_ROWS (<= 64) rows
        at a time: the (FINAL_ROWS, BLOCK_C) chunk, not the whole split, sets the finaliser's registers
        (a one-shot (256, 64) tile took the kernel to 139-165 registers and spilled at 4x4)."""
        rows = tl.arange(0, FINAL_ROWS)
        acc = tl.zeros((FINAL_ROWS, BLOCK_C), part_ptr.dtype.element_ty)
        for r0 in range(0, split, FINAL_ROWS):
            offs = (row0 + r0 + rows)[:, None] * C + cs[None, :]
            mask = (r0 + rows < split)[:, None] & (cs < C)[None, :]
            acc += tl.load(part_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg")  # .cg: skip L1
        return tl.sum(acc, 0)

    @triton.jit
    def _bn_relu_fwd_stats_kernel(
        x_ptr,  # (O, C, I) view of (N, C, H, W), fp32/fp16/bf16/fp64
        running_mean_ptr, running_var_ptr,  # (C,) before this batch
        part_ptr,  # (2 * split, C) acc dtype: sums of d and of d*d, one row per split program
        ticket_ptr,  # (cdiv(C, BLOCK_C),) int32, zero on entry
        mean_ptr, rstd_ptr,  # (C,) acc dtype out: the statistics that normalise, saved for backward
        new_mean_ptr, new_var_ptr,  # (C,) out: running statistics after this batch
        C, I, TI, T, s_o, s_c, s_i, tiles_per_prog, split, count,  # count = N*H*W
        momentum: tl.float64, eps: tl.float64,
        FINAL_ROWS: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        pid_s, pid_c = tl.program_id(0), tl.program_id(1)
        acc_ty = part_ptr.dtype.element_ty
        cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cs < C
        shift = tl.load(x_ptr + cs * s_c, mask=cmask, other=0.0).to(acc_ty)  # x[0, c, 0]
        acc = tl.zeros((BLOCK_I, BLOCK_C), acc_ty)
        acc2 = tl.zeros((BLOCK_I, BLOCK_C), acc_ty)
        t0 = pid_s * tiles_per_prog
        for t in range(t0, tl.minimum(t0 + tiles_per_prog, T)):
            offs, mask = _tile(t, pid_c, C, I, TI, s_o, s_c, s_i, BLOCK_I, BLOCK_C)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            d = tl.where(mask, x - shift[None, :], 0.0)
            acc += d
            acc2 += d * d
        tl.store(part_ptr + pid_s * C + cs, tl.sum(acc, 0), mask=cmask)
        tl.store(part_ptr + (split + pid_s) * C + cs, tl.sum(acc2, 0), mask=cmask)
        if _last_ticket(ticket_ptr, pid_c, split):
            mean_d = _sum_partials(part_ptr, 0, split, C, cs, FINAL_ROWS, BLOCK_C) / count
            mean_d2 = _sum_partials(part_ptr, split, split, C, cs, FINAL_ROWS, BLOCK_C) / count
            var = tl.maximum(mean_d2 - mean_d * mean_d, 0.0)
            mean = shift + mean_d
            tl.store(mean_ptr + cs, mean, mask=cmask)
            tl.store(rstd_ptr + cs, 1.0 / tl.sqrt(var + tl.full((), eps, acc_ty)), mask=cmask)
            m = tl.full((), momentum, acc_ty)
            rm = tl.load(running_mean_ptr + cs, mask=cmask, other=0.0).to(acc_ty)
            rv = tl.load(running_var_ptr + cs, mask=cmask, other=0.0).to(acc_ty)
            unbiased = var * count / (count - 1)
            tl.store(new_mean_ptr + cs, (rm * (1.0 - m) + mean * m).to(new_mean_ptr.dtype.element_ty), mask=cmask)
            tl.store(new_var_ptr + cs, (rv * (1.0 - m) + unbiased * m).to(new_var_ptr.dtype.element_ty), mask=cmask)

    @triton.jit
    def _coefficients(mean_ptr, rstd_ptr, weight_ptr, bias_ptr, cs, cmask, acc_ty: tl.constexpr):
        """Per-channel mean, rstd, scale = w*rstd and shift = b - mean*scale (forward and backward alike)."""
        mean = tl.load(mean_ptr + cs, mask=cmask, other=0.0).to(acc_ty)
        rstd = tl.load(rstd_ptr + cs, mask=cmask, other=0.0).to(acc_ty)
        scale = tl.load(weight_ptr + cs, mask=cmask, other=0.0).to(acc_ty) * rstd
        shift = tl.load(bias_ptr + cs, mask=cmask, other=0.0).to(acc_ty) - mean * scale
        return mean, rstd, scale, shift

    @triton.jit
    def _bn_relu_fwd_apply_kernel(
        x_ptr, y_ptr,  # (O, C, I) views, same strides
        mean_ptr, rstd_ptr,  # (C,) acc dtype: read in training; in eval written from the running statistics
        weight_ptr, bias_ptr, running_mean_ptr, running_var_ptr,  # (C,)
        new_mean_ptr, new_var_ptr,  # (C,) out, eval only: copies of the running statistics
        C, I, TI, s_o, s_c, s_i,
        eps: tl.float64,
        TRAINING: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        t, pid_c = tl.program_id(0), tl.program_id(1)
        acc_ty = mean_ptr.dtype.element_ty
        cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cs < C
        if not TRAINING:  # eval: normalise by the running statistics; tile 0 records them for backward
            rm = tl.load(running_mean_ptr + cs, mask=cmask, other=0.0)
            rv = tl.load(running_var_ptr + cs, mask=cmask, other=1.0)
            if t == 0:
                tl.store(mean_ptr + cs, rm.to(acc_ty), mask=cmask)
                tl.store(rstd_ptr + cs, 1.0 / tl.sqrt(rv.to(acc_ty) + tl.full((), eps, acc_ty)), mask=cmask)
                tl.store(new_mean_ptr + cs, rm, mask=cmask)
                tl.store(new_var_ptr + cs, rv, mask=cmask)
            scale = tl.load(weight_ptr + cs, mask=cmask, other=0.0).to(acc_ty) / tl.sqrt(
                rv.to(acc_ty) + tl.full((), eps, acc_ty))
            shift = tl.load(bias_ptr + cs, mask=cmask, other=0.0).to(acc_ty) - rm.to(acc_ty) * scale
        else:
            _, _, scale, shift = _coefficients(mean_ptr, rstd_ptr, weight_ptr, bias_ptr, cs, cmask, acc_ty)
        offs, mask = _tile(t, pid_c, C, I, TI, s_o, s_c, s_i, BLOCK_I, BLOCK_C)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
        y = tl.maximum(x * scale[None, :] + shift[None, :], 0.0)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _bn_relu_bwd_reduce_kernel(
        dy_ptr, x_ptr,  # (O, C, I) views, same strides
        mean_ptr, rstd_ptr, weight_ptr, bias_ptr,  # (C,): what forward normalised with
        part_ptr,  # (2 * split, C) acc dtype: sums of dz and dz * x_hat, dz = dy * (z > 0)
        ticket_ptr,  # (cdiv(C, BLOCK_C),) int32, zero on entry
        dweight_ptr, dbias_ptr,  # (C,) acc dtype out
        C, I, TI, T, s_o, s_c, s_i, tiles_per_prog, split,
        FINAL_ROWS: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        pid_s, pid_c = tl.program_id(0), tl.program_id(1)
        acc_ty = part_ptr.dtype.element_ty
        cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cs < C
        mean, rstd, scale, shift = _coefficients(mean_ptr, rstd_ptr, weight_ptr, bias_ptr, cs, cmask, acc_ty)
        acc_db = tl.zeros((BLOCK_I, BLOCK_C), acc_ty)
        acc_dw = tl.zeros((BLOCK_I, BLOCK_C), acc_ty)
        t0 = pid_s * tiles_per_prog
        for t in range(t0, tl.minimum(t0 + tiles_per_prog, T)):
            offs, mask = _tile(t, pid_c, C, I, TI, s_o, s_c, s_i, BLOCK_I, BLOCK_C)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            dz = tl.where(mask & (x * scale[None, :] + shift[None, :] > 0), dy, 0.0)  # forward's mask
            acc_db += dz
            acc_dw += dz * ((x - mean[None, :]) * rstd[None, :])
        tl.store(part_ptr + pid_s * C + cs, tl.sum(acc_db, 0), mask=cmask)
        tl.store(part_ptr + (split + pid_s) * C + cs, tl.sum(acc_dw, 0), mask=cmask)
        if _last_ticket(ticket_ptr, pid_c, split):
            tl.store(dbias_ptr + cs, _sum_partials(part_ptr, 0, split, C, cs, FINAL_ROWS, BLOCK_C), mask=cmask)
            tl.store(dweight_ptr + cs, _sum_partials(part_ptr, split, split, C, cs, FINAL_ROWS, BLOCK_C), mask=cmask)

    @triton.jit
    def _bn_relu_bwd_dx_kernel(
        dy_ptr, x_ptr, dx_ptr,  # (O, C, I) views, same strides
        mean_ptr, rstd_ptr, weight_ptr, bias_ptr,  # (C,)
        dweight_ptr, dbias_ptr,  # (C,) acc dtype, from the reduce kernel
        C, I, TI, s_o, s_c, s_i, count,
        TRAINING: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        t, pid_c = tl.program_id(0), tl.program_id(1)
        acc_ty = mean_ptr.dtype.element_ty
        cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cs < C
        mean, rstd, scale, shift = _coefficients(mean_ptr, rstd_ptr, weight_ptr, bias_ptr, cs, cmask, acc_ty)
        if TRAINING:  # batch statistics depend on x: dx = scale * (dz - mean(dz) - x_hat * mean(dz * x_hat))
            db = tl.load(dbias_ptr + cs, mask=cmask, other=0.0)
            dw = tl.load(dweight_ptr + cs, mask=cmask, other=0.0)
            alpha = -scale * rstd * dw / count  # per channel: dx = scale*dz + alpha*(x - mean) + beta
            beta = -scale * db / count
        offs, mask = _tile(t, pid_c, C, I, TI, s_o, s_c, s_i, BLOCK_I, BLOCK_C)  # per-channel loads above, tile below
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(acc_ty)
        dx = tl.where(x * scale[None, :] + shift[None, :] > 0, dy, 0.0) * scale[None, :]
        if TRAINING:
            dx += alpha[None, :] * (x - mean[None, :]) + beta[None, :]
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---- launch geometry ---------------------------------------------------------------------------

# Triton decides at decoration time whether a kernel is compiled or interpreted.
INTERPRETED = HAS_TRITON and type(_bn_relu_fwd_apply_kernel).__name__ == "InterpretedFunction"
MAX_SPLIT = 1024  # partial rows per channel block (the finaliser sums them FINAL_ROWS at a time)
FINAL_ELEMS = 2048  # the finaliser's (FINAL_ROWS, BLOCK_C) chunk at most: 16 fp32 per thread at 4 warps
GEOMETRY_OVERRIDE: dict = {}  # tests force split / BLOCK_I here to drive the split path in the interpreter
_SM_COUNT: dict = {}


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels-last when x is (or is closest to) channels-last, else contiguous NCHW."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _sm_count(device: torch.device) -> int:
    if device not in _SM_COUNT:
        _SM_COUNT[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SM_COUNT[device]


def _geometry(x: torch.Tensor, sm_count: int | None = None) -> dict:
    """The (O, C, I) view of a dense x, tile sizes and the split. GPU: 4096-element tiles and about four
    reduction programs per SM. Interpreter: its cost is per program, so 16384-element tiles and no split.
    sm_count: plan for a GPU with that many SMs whatever x's device (the static check compiles for GPUs
    this machine does not have, from meta tensors); None: the GPU x is on, or the interpreter."""
    n, c, h, w = x.shape
    gpu = sm_count is not None or (x.device.type == "cuda" and not INTERPRETED)
    channels_last = x.stride(1) == 1 and c > 1
    if channels_last:
        o_, i_, s_o, s_c, s_i = 1, n * h * w, 0, 1, c
    else:
        o_, i_, s_o, s_c, s_i = n, h * w, x.stride(0), x.stride(1), 1
    elems = 4096 if gpu else 16384
    if channels_last:
        block_c = min(triton.next_power_of_2(c), 64)
        block_i = max(1, min(triton.next_power_of_2(i_), elems // block_c))
    else:
        block_i = min(triton.next_power_of_2(i_), 1024)
        block_c = max(1, min(triton.next_power_of_2(c), elems // block_i))
    block_i = GEOMETRY_OVERRIDE.get("BLOCK_I", block_i)
    block_c = GEOMETRY_OVERRIDE.get("BLOCK_C", block_c)
    c_blocks = triton.cdiv(c, block_c)
    ti = triton.cdiv(i_, block_i)
    t = o_ * ti
    if "split" in GEOMETRY_OVERRIDE:
        split = GEOMETRY_OVERRIDE["split"]
    elif not gpu:
        split = 1
    else:
        split = triton.cdiv(4 * (sm_count or _sm_count(x.device)), c_blocks)
    split = max(1, min(split, t, MAX_SPLIT))
    tiles_per_prog = triton.cdiv(t, split)
    split = triton.cdiv(t, tiles_per_prog)  # no empty programs; the last may get fewer tiles
    return dict(C=c, I=i_, TI=ti, T=t, s_o=s_o, s_c=s_c, s_i=s_i, count=n * h * w, c_blocks=c_blocks,
                tiles_per_prog=tiles_per_prog, split=split, BLOCK_I=block_i, BLOCK_C=block_c,
                FINAL_ROWS=GEOMETRY_OVERRIDE.get("FINAL_ROWS", min(64, triton.next_power_of_2(split),
                                                                  max(1, FINAL_ELEMS // block_c))))


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics and per-channel tensors: fp64 for fp64 input (exact comparisons in tests), fp32 otherwise."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_triton(x: torch.Tensor) -> None:
    if not HAS_TRITON:
        raise RuntimeError("backend='triton' needs the triton package (pip install triton); "
                           "use backend='reference' or 'auto' without it")
    if x.device.type == "cpu" and not INTERPRETED:
        raise RuntimeError("Triton kernels on CPU tensors run only in Triton's interpreter: set TRITON_INTERPRET=1 "
                           "in the environment before kernels.bn_relu is imported, or use backend='reference'")
    if x.numel() >= 2**31:
        raise ValueError(f"input of {x.numel():,} elements exceeds the kernels' int32 offsets")


def _plain(kernel):
    return kernel


def forward_launches(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                     running_var: torch.Tensor, training: bool, momentum: float, eps: float,
                     sm_count: int | None = None) -> tuple[tuple, list]:
    """Forward's outputs, allocated, and the launches that fill them: [(kernel, grid, args, constexprs)].
    bn_relu_forward runs them; bench.tools.kernel_static compiles them for GPUs it does not have (meta tensors,
    sm_count given), so the static table sees the launcher's own grids, arguments and constexprs."""
    x = x.contiguous(memory_format=_memory_format(x))
    g = _geometry(x, sm_count)
    acc = _acc_dtype(x)
    y = torch.empty_like(x)
    mean = torch.empty(g["C"], device=x.device, dtype=acc)
    rstd = torch.empty_like(mean)
    new_mean, new_var = torch.empty_like(running_mean), torch.empty_like(running_var)
    view = (g["C"], g["I"], g["TI"])
    strides = (g["s_o"], g["s_c"], g["s_i"])
    launches = []
    if training:
        if g["count"] < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        part = torch.empty((2 * g["split"], g["C"]), device=x.device, dtype=acc)
        tickets = torch.zeros(g["c_blocks"], device=x.device, dtype=torch.int32)
        launches.append((_bn_relu_fwd_stats_kernel, (g["split"], g["c_blocks"]), (
            x, running_mean, running_var, part, tickets, mean, rstd, new_mean, new_var, *view, g["T"], *strides,
            g["tiles_per_prog"], g["split"], g["count"], float(momentum), float(eps)),
            dict(FINAL_ROWS=g["FINAL_ROWS"], BLOCK_I=g["BLOCK_I"], BLOCK_C=g["BLOCK_C"])))
    launches.append((_bn_relu_fwd_apply_kernel, (g["T"], g["c_blocks"]), (
        x, y, mean, rstd, weight, bias, running_mean, running_var, new_mean, new_var, *view, *strides, float(eps)),
        dict(TRAINING=training, BLOCK_I=g["BLOCK_I"], BLOCK_C=g["BLOCK_C"])))
    return (y, mean, rstd, new_mean, new_var), launches


def backward_launches(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      mean: torch.Tensor, rstd: torch.Tensor, training: bool,
                      sm_count: int | None = None) -> tuple[tuple, list]:
    """Backward's outputs, allocated, and the launches that fill them (as forward_launches)."""
    x = x.contiguous(memory_format=_memory_format(x))
    dy = dy.contiguous(memory_format=_memory_format(x))  # the kernels index both with x's strides
    g = _geometry(x, sm_count)
    acc = _acc_dtype(x)
    dx = torch.empty_like(x)
    part = torch.empty((2 * g["split"], g["C"]), device=x.device, dtype=acc)
    tickets = torch.zeros(g["c_blocks"], device=x.device, dtype=torch.int32)
    dweight = torch.empty(g["C"], device=x.device, dtype=acc)
    dbias = torch.empty_like(dweight)
    view = (g["C"], g["I"], g["TI"])
    strides = (g["s_o"], g["s_c"], g["s_i"])
    launches = [
        (_bn_relu_bwd_reduce_kernel, (g["split"], g["c_blocks"]), (
            dy, x, mean, rstd, weight, bias, part, tickets, dweight, dbias, *view, g["T"], *strides,
            g["tiles_per_prog"], g["split"]),
            dict(FINAL_ROWS=g["FINAL_ROWS"], BLOCK_I=g["BLOCK_I"], BLOCK_C=g["BLOCK_C"])),
        (_bn_relu_bwd_dx_kernel, (g["T"], g["c_blocks"]), (
            dy, x, dx, mean, rstd, weight, bias, dweight, dbias, *view, *strides, g["count"]),
            dict(TRAINING=training, BLOCK_I=g["BLOCK_I"], BLOCK_C=g["BLOCK_C"])),
    ]
    return (dx, dweight, dbias), launches


def bn_relu_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                    running_var: torch.Tensor, training: bool, momentum: float, eps: float, wrap=_plain):
    """Launch the forward kernels (2 in training, 1 in eval). x: (N, C, H, W); weight, bias, running stats: (C,)
    (not modified). Returns y (x's dtype and layout); mean and rstd (C,) in the statistics' dtype, saved for
    backward; the running mean and var after this batch (new tensors). `wrap` is torch.library.wrap_triton
    inside a triton_op."""
    _check_triton(x)
    out, launches = forward_launches(x, weight, bias, running_mean, running_var, training, momentum, eps)
    for kernel, grid, args, constexprs in launches:
        wrap(kernel)[grid](*args, **constexprs)
    return out


def bn_relu_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     mean: torch.Tensor, rstd: torch.Tensor, training: bool, wrap=_plain):
    """Launch the 2 backward kernels. dy, x: (N, C, H, W); the rest (C,). Returns dx, dweight, dbias
    (the last two in the statistics' dtype)."""
    _check_triton(x)
    out, launches = backward_launches(dy, x, weight, bias, mean, rstd, training)
    for kernel, grid, args, constexprs in launches:
        wrap(kernel)[grid](*args, **constexprs)
    return out


# ---- the op: triton_op on CUDA (traceable), custom_op around the interpreter ------------------------------

FwdOut = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
BwdOut = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# triton_op decomposes into wrap_triton launches, which need compiled (JIT) kernels: not the interpreter's.
TRACEABLE = HAS_TRITON and not INTERPRETED and hasattr(torch.library, "triton_op")
_wrap = torch.library.wrap_triton if TRACEABLE else _plain


def _fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
         running_var: torch.Tensor, training: bool, momentum: float, eps: float) -> FwdOut:
    return bn_relu_forward(x, weight, bias, running_mean, running_var, training, momentum, eps, wrap=_wrap)


def _bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
         rstd: torch.Tensor, training: bool) -> BwdOut:
    return bn_relu_backward(dy, x, weight, bias, mean, rstd, training, wrap=_wrap)


def _out_like(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))


if TRACEABLE:  # the function body is the fake implementation too: it only allocates and launches
    bn_relu_fwd_op = torch.library.triton_op("speedrun::bn_relu_fwd", _fwd, mutates_args=())
    bn_relu_bwd_op = torch.library.triton_op("speedrun::bn_relu_bwd", _bwd, mutates_args=())
else:  # functional: the new running statistics are outputs, copied into the buffers by the module
    bn_relu_fwd_op = torch.library.custom_op("speedrun::bn_relu_fwd", _fwd, mutates_args=())
    bn_relu_bwd_op = torch.library.custom_op("speedrun::bn_relu_bwd", _bwd, mutates_args=())

    @bn_relu_fwd_op.register_fake
    def _(x, weight, bias, running_mean, running_var, training, momentum, eps):
        stat = lambda: x.new_empty(x.shape[1], dtype=_acc_dtype(x))  # noqa: E731
        return _out_like(x), stat(), stat(), torch.empty_like(running_mean), torch.empty_like(running_var)

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
