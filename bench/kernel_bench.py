"""`make bench-kernels`: fused Triton BN+ReLU vs eager and compiled BN+ReLU at the model's shapes (CUDA only).

Times with triton.testing.do_bench (median and 20/80% quantiles, ms). Achieved GB/s uses the bytes each
pass must move (kernels/bn_relu.py docstring): training forward 3*E*b, backward 5*E*b; the same byte
counts are used for eager and compiled, so the columns compare time at equal work. The card's copy
bandwidth (read + write of 1 GiB) is measured in the same run as the ceiling.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from .results import ENV_COLUMNS, append_row, environment

SHAPES = [(512, 64, 32, 32), (512, 128, 16, 16), (512, 256, 8, 8), (512, 512, 4, 4)]  # BN inputs of CustomResNet
KERNEL_COLUMNS = ("timestamp", *ENV_COLUMNS, "impl", "pass", "shape", "dtype", "layout", "ms_median", "ms_p20", "ms_p80",
                  "gb_per_s", "copy_gb_per_s", "pct_of_copy")


def copy_bandwidth_gbs(device: torch.device) -> float:
    from triton.testing import do_bench
    src = torch.empty(2**28, dtype=torch.float32, device=device)  # 1 GiB
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), return_mode="median")
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


def measure(device: torch.device, dtypes=(torch.float32, torch.bfloat16), layouts=("channels_last", "nchw")):
    from triton.testing import do_bench
    copy_gbs = copy_bandwidth_gbs(device)
    rows = []
    for shape in SHAPES:
        for dtype in dtypes:
            for layout in layouts:
                x = torch.randn(shape, device=device, dtype=dtype)
                if layout == "channels_last":
                    x = x.contiguous(memory_format=torch.channels_last)
                elems, b = x.numel(), x.element_size()
                for impl, make in _impls().items():
                    mod = make(shape[1]).to(device).train()
                    xg = x.detach().clone().requires_grad_(True)
                    y = mod(xg)
                    dy = torch.randn_like(y)
                    mod(xg).backward(dy)  # compile forward and backward before any timing
                    fwd = do_bench(lambda: mod(x), quantiles=[0.5, 0.2, 0.8])
                    fwd_bwd = do_bench(lambda: mod(xg).backward(dy), quantiles=[0.5, 0.2, 0.8],
                                       grad_to_none=[xg] + list(mod.parameters()))
                    bwd = [max(fb - f, 1e-6) for fb, f in zip(fwd_bwd, fwd)]
                    for name, (med, p20, p80), nbytes in (("forward", fwd, 3 * elems * b),
                                                          ("backward", bwd, 5 * elems * b)):
                        gbs = nbytes / (med * 1e-3) / 1e9
                        rows.append({"impl": impl, "pass": name, "shape": "x".join(map(str, shape)),
                                     "dtype": str(dtype).replace("torch.", ""), "layout": layout,
                                     "ms_median": med, "ms_p20": p20, "ms_p80": p80, "gb_per_s": gbs,
                                     "copy_gb_per_s": copy_gbs, "pct_of_copy": 100 * gbs / copy_gbs})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| shape | dtype | layout | pass | triton ms | eager ms | compiled ms | triton GB/s | % of copy |",
             "|---|---|---|---|---|---|---|---|---|"]
    keyed = {(r["shape"], r["dtype"], r["layout"], r["pass"], r["impl"]): r for r in rows}
    for (shape, dtype, layout, pas, impl), r in keyed.items():
        if impl != "triton":
            continue
        e = keyed[(shape, dtype, layout, pas, "eager")]
        c = keyed[(shape, dtype, layout, pas, "compiled")]
        lines.append(f"| {shape} | {dtype} | {layout} | {pas} | {r['ms_median']:.3f} | {e['ms_median']:.3f} | "
                     f"{c['ms_median']:.3f} | {r['gb_per_s']:.0f} | {r['pct_of_copy']:.0f}% |")
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
    if not torch.cuda.is_available():
        print("bench-kernels needs a CUDA device (do_bench times GPU kernels); none is visible, no rows written. "
              "Kernel correctness on this machine: make test (tests/test_bn_relu.py, Triton interpreter).")
        return 0
    device = torch.device("cuda")
    rows = measure(device, dts, lays)
    env = environment(device)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for r in rows:
        append_row(Path(results_dir) / "kernels.csv", {"timestamp": stamp, **env, **r}, KERNEL_COLUMNS)
    print(f"device: {env['device']}; copy bandwidth {rows[0]['copy_gb_per_s']:.0f} GB/s")
    print(table(rows))
    print(f"{len(rows)} rows appended to {results_dir}/kernels.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
