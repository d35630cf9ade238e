"""`make bench-kernels`: fused Triton BN+ReLU vs eager and compiled BN+ReLU at the model's shapes (CUDA only).

Times with triton.testing.do_bench (median and 20/80% quantiles, ms). Achieved GB/s uses the bytes each
training pass must move (kernels/bn_relu.py docstring): forward 3*E*b (read x for the statistics, read x and
write y), backward 5*E*b (read x and dy for the sums, read them again and write dx); the same byte counts are
used for eager and compiled, so the columns compare time at equal work. Launches per call are counted with
the CUDA profiler (kernels, memsets and copies on the device), forward alone and forward+backward minus
forward. The card's copy bandwidth (read + write of 1 GiB) is measured in the same run as the ceiling. Rows are
appended shape by shape, so a run stopped by a time limit keeps the shapes it finished.
With BENCH_CUDA_STANDIN=1 (the GPU check's rehearsal) a CPU runs the same loop: Triton interpreted, a synchronised
clock instead of do_bench, no launch count, BENCH_KERNEL_BATCH images per shape (512 otherwise). Its rows name
the CPU; they time nothing a GPU does.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from bench.core.machine import environment
from bench.records.results import ENV_COLUMNS, append_row

SHAPES = [(512, 64, 32, 32), (512, 128, 16, 16), (512, 256, 8, 8), (512, 512, 4, 4)]  # BN inputs of CustomResNet
STANDIN_ENV = "BENCH_CUDA_STANDIN"
KERNEL_COLUMNS = ("timestamp", *ENV_COLUMNS, "impl", "pass", "shape", "dtype", "layout", "ms_median", "ms_p20",
                  "ms_p80", "gb_per_s", "copy_gb_per_s", "pct_of_copy", "bytes", "launches")
PASS_BYTES_PER_ELEMENT = {"forward": 3, "backward": 5}  # element-sized reads + writes each pass must make


def pass_bytes(pass_name: str, shape: tuple[int, ...], element_size: int) -> int:
    """Bytes a training pass of BN+ReLU must move at least (two-pass algorithm): 3*E*b forward, 5*E*b backward."""
    elems = 1
    for d in shape:
        elems *= d
    return PASS_BYTES_PER_ELEMENT[pass_name] * elems * element_size


def count_launches(fn, tensors=()) -> int:
    """Device activities (kernels, memsets, copies) one call of fn puts on the GPU, after a warm-up call.
    The tensors' .grad is cleared first, so backward writes gradients instead of adding to them."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    for t in tensors:
        t.grad = None
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def cpu_bench(fn, quantiles=None, grad_to_none=(), reps: int = 5, return_mode: str = "median"):
    """do_bench's answer on a CPU (the rehearsal): ms of `fn` by a perf_counter clock, median and quantiles."""
    times = []
    for _ in range(reps):
        for t in grad_to_none:
            t.grad = None
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    if quantiles is None:
        return statistics.median(times)
    ordered = sorted(times)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] if q != 0.5 else statistics.median(times)
            for q in quantiles]


def _bench(device: torch.device):
    if device.type == "cuda":
        from triton.testing import do_bench
        return do_bench
    return cpu_bench


def copy_bandwidth_gbs(device: torch.device) -> float:
    src = torch.empty(2**28 if device.type == "cuda" else 2**24, dtype=torch.float32, device=device)  # 1 GiB (CPU: 64 MiB)
    dst = torch.empty_like(src)
    ms = _bench(device)(lambda: dst.copy_(src), return_mode="median")
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def _impls():
    from kernels.bn_relu import BatchNormReLU2d
    def eager(c):
        return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))

    def compiled(c):
        return torch.compile(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()))

    def triton(c):
        return BatchNormReLU2d(c, backend="triton")
    return {"triton": triton, "eager": eager, "compiled": compiled}


def measure(device: torch.device, dtypes=(torch.float32, torch.bfloat16), layouts=("channels_last", "nchw"),
            shapes=SHAPES):
    """Yields each shape's rows as soon as that shape is measured."""
    do_bench = _bench(device)
    cuda = device.type == "cuda"
    copy_gbs = copy_bandwidth_gbs(device)
    for shape in shapes:
        rows = []
        for dtype in dtypes:
            for layout in layouts:
                x = torch.randn(shape, device=device, dtype=dtype)
                if layout == "channels_last":
                    x = x.contiguous(memory_format=torch.channels_last)
                for impl, make in _impls().items():
                    mod = make(shape[1]).to(device).train()
                    xg = x.detach().clone().requires_grad_(True)
                    dy = torch.randn_like(mod(xg))

                    def fwd_call():
                        return mod(xg)

                    def fwd_bwd_call():
                        mod(xg).backward(dy)
                    fwd_bwd_call()  # compile forward and backward before any timing
                    fwd = do_bench(fwd_call, quantiles=[0.5, 0.2, 0.8])
                    fwd_bwd = do_bench(fwd_bwd_call, quantiles=[0.5, 0.2, 0.8],
                                       grad_to_none=[xg] + list(mod.parameters()))
                    bwd = [max(fb - f, 1e-6) for fb, f in zip(fwd_bwd, fwd)]
                    n_fwd = count_launches(fwd_call) if cuda else None  # the CUDA profiler counts them
                    n_bwd = count_launches(fwd_bwd_call, [xg] + list(mod.parameters())) - n_fwd if cuda else None
                    for name, (med, p20, p80), launches in (("forward", fwd, n_fwd), ("backward", bwd, n_bwd)):
                        nbytes = pass_bytes(name, shape, x.element_size())
                        gbs = nbytes / (med * 1e-3) / 1e9
                        rows.append({"impl": impl, "pass": name, "shape": "x".join(map(str, shape)),
                                     "dtype": str(dtype).replace("torch.", ""), "layout": layout,
                                     "ms_median": med, "ms_p20": p20, "ms_p80": p80, "gb_per_s": gbs,
                                     "copy_gb_per_s": copy_gbs, "pct_of_copy": 100 * gbs / copy_gbs,
                                     "bytes": nbytes, "launches": launches})
        yield rows


TABLE_HEADER = ["| shape | dtype | layout | pass | MB | triton ms | eager ms | compiled ms | launches t/e/c "
                "| triton GB/s | % of copy |", "|---|---|---|---|---|---|---|---|---|---|---|"]


def table(rows: list[dict], header: bool = True) -> str:
    """Markdown: one line per (shape, dtype, layout, pass); ms and launches for each implementation."""
    lines = list(TABLE_HEADER) if header else []
    keyed = {(r["shape"], r["dtype"], r["layout"], r["pass"], r["impl"]): r for r in rows}
    for (shape, dtype, layout, pas, impl), r in keyed.items():
        if impl != "triton":
            continue
        e = keyed[(shape, dtype, layout, pas, "eager")]
        c = keyed[(shape, dtype, layout, pas, "compiled")]
        lines.append(f"| {shape} | {dtype} | {layout} | {pas} | {r['bytes'] / 1e6:.1f} | {r['ms_median']:.3f} | "
                     f"{e['ms_median']:.3f} | {c['ms_median']:.3f} | {'/'.join(str(k['launches'] if k['launches'] is not None else '-') for k in (r, e, c))} | "
                     f"{r['gb_per_s']:.0f} | {r['pct_of_copy']:.0f}% |")
    return "\n".join(lines)


DTYPE_NAMES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def main(results_dir: str = "results", dtypes: str = "fp32,bf16", layouts: str = "channels_last,nchw") -> int:
    try:
        dts = tuple(DTYPE_NAMES[d] for d in dtypes.split(","))
    except KeyError as e:
        print(f"config error: unknown dtype {e}; choose from {', '.join(DTYPE_NAMES)}", file=sys.stderr)
        return 2
    lays = tuple(layouts.split(","))
    if not set(lays) <= {"channels_last", "nchw"}:
        print(f"config error: layouts={layouts!r}; choose from channels_last,nchw", file=sys.stderr)
        return 2
    batch = os.environ.get("BENCH_KERNEL_BATCH", "512")
    if not batch.isdigit() or int(batch) < 2:
        print(f"config error: BENCH_KERNEL_BATCH={batch!r}: give an integer >= 2 (images per shape)", file=sys.stderr)
        return 2
    shapes = [(int(batch), *s[1:]) for s in SHAPES]
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif os.environ.get(STANDIN_ENV) == "1":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read at Triton's first import, which comes after this
        device = torch.device("cpu")
    else:
        print("bench-kernels needs a CUDA device (it times GPU kernels); none is visible, no rows written.")
        return 0
    env = environment(device)
    n = 0
    for i, rows in enumerate(measure(device, dts, lays, shapes)):
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for r in rows:  # shape by shape: a run cut by its time limit keeps the shapes it finished
            append_row(Path(results_dir) / "kernels.csv", {"timestamp": stamp, **env, **r}, KERNEL_COLUMNS)
        if i == 0:
            print(f"device: {env['device']}; copy bandwidth {rows[0]['copy_gb_per_s']:.0f} GB/s")
        print(table(rows, header=i == 0), flush=True)
        n += len(rows)
    print(f"{n} rows appended to {results_dir}/kernels.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
