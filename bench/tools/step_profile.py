"""`python -m bench profile` (`make profile`): torch.profiler over N warm training steps of any variant.

The step is the one training uses (TrainStep: compiled, CUDA-graph or eager as the variant says) on a random
batch of the recipe's size, warmed up first (compilation, capture), then N steps profiled, each marked
`step i`. Writes results/profiles/<id>/: `trace.json` (Chrome / Perfetto: chrome://tracing or ui.perfetto.dev),
`steps.csv` (per step: host time, device-busy fraction, kernels launched) and `top_ops.md` (the ops with the
most self device time). On a CPU the "device" is the CPU itself: device time is the ops' own CPU time and
"kernels" are the ATen ops run, so the busy fraction says how much of a step is op work rather than Python.
The header also counts what Dynamo and Inductor did in the warm-up: graphs compiled, graph breaks, and CUDA-graph
skips (`skipping cudagraphs due to ...` under TORCH_LOGS=cudagraphs), so a profile says whether its mode captured.
`--compile=graph` captures the whole step as a CUDA graph: on a CPU it is refused in one line, unless
BENCH_CUDA_STANDIN=1 (the GPU check's rehearsal) runs it through the capture's CPU stand-in.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity, profile, record_function

from model.build import DTYPES, build_model

from bench.core.ema import WeightEMA
from bench.core.machine import default_device_type, environment
from bench.core.step import TrainStep, capture_for
from bench.core.timer import synchronize
from bench.core.variants import build_config
from bench.records.results import atomic_write, write_csv

STEP_COLUMNS = ("step", "host_ms", "device_busy_ms", "device_busy_fraction", "kernels")


def _device_events(prof, cuda: bool) -> list:
    """The profiler's device work: CUDA kernels on a GPU; on a CPU, the ATen ops (their own CPU time)."""
    events = prof.events()
    if cuda:
        return [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    return [e for e in events  # top-level ATen ops: the ones Python (or autograd) called, not their callees
            if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]


def profile_steps(preset: str = "fast", variant: str = "fast", steps: int = 3, warmup: int = 2,
                  overrides: dict[str, str] | None = None, results_dir: str = "results") -> Path:
    """Profile `steps` warm steps; returns the folder written."""
    device = torch.device(default_device_type())
    cuda = device.type == "cuda"
    cfg = build_config(preset, variant, "full", {"device": device.type, **(overrides or {})}, device.type)
    t = cfg.train
    capture = capture_for(device) if t.compile == "graph" else None  # a CPU without the stand-in: refused here
    counters.clear()
    torch.manual_seed(0)
    model = build_model(cfg.model, device, t.channels_last).train()
    ema = WeightEMA(model, cfg.optim.ema_decay, cfg.optim.ema_every) if cfg.optim.ema_decay else None
    step = TrainStep(model, cfg, device, warmup + steps, warmup + steps, ema, capture=capture)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(t.batch_size, 3, 32, 32, device=device, generator=g).to(
        dtype=DTYPES[t.precision],
        memory_format=torch.channels_last if t.channels_last else torch.contiguous_format)
    y = torch.randint(0, 10, (t.batch_size,), device=device, generator=g)
    for _ in range(warmup):
        step.step(x, y)
    synchronize(device)
    compiled = (f"{int(counters['stats']['unique_graphs'])} graphs compiled, "
                f"{sum(counters['graph_break'].values())} graph breaks, "
                f"{int(counters['inductor']['cudagraph_skips'])} cudagraph skips")
    host_ms = []
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for i in range(steps):
            t0 = time.perf_counter()
            with record_function(f"step {i}"):
                step.step(x, y)
                synchronize(device)
            host_ms.append(1000 * (time.perf_counter() - t0))
    label = re.sub(r"[^A-Za-z0-9.=-]+", "-", f"{cfg.preset}-{cfg.variant}-{device.type}").strip("-")
    run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + f"-{label}"
    out = Path(results_dir) / "profiles" / run_id
    out.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(out / "trace.json"))
    rows = step_rows(prof, cuda, host_ms)
    write_csv(out / "steps.csv", STEP_COLUMNS, rows)
    env = environment(device)
    header = (f"# Profile {run_id}\n\n{cfg.preset}/{cfg.variant}: {t.precision}, "
              f"{'channels-last' if t.channels_last else 'NCHW'}, compile {t.compile}, batch {t.batch_size}; "
              f"{env['device']}, torch {env['torch_version']}, commit {env['git_commit']}; {warmup} warm-up steps, "
              f"{steps} profiled; warm-up: {compiled}.\n\n")
    atomic_write(out / "top_ops.md", header + steps_table(rows) + "\n" + top_ops_table(prof, cuda) + "\n")
    return out


def step_rows(prof, cuda: bool, host_ms: list[float]) -> list[dict]:
    """One row per profiled step: its host time, the device work inside its `step i` range, the kernels."""
    spans = sorted((e for e in prof.events() if e.name.startswith("step ")), key=lambda e: e.time_range.start)
    work = _device_events(prof, cuda)
    rows = []
    for i, (span, ms) in enumerate(zip(spans, host_ms)):
        if cuda:  # kernels run after their launch: attribute them by their launch's step (correlation)
            inside = [e for e in work if e.time_range.start >= span.time_range.start
                      and (i + 1 == len(spans) or e.time_range.start < spans[i + 1].time_range.start)]
            busy = sum(e.time_range.elapsed_us() for e in inside) / 1000
        else:
            inside = [e for e in work if span.time_range.start <= e.time_range.start < span.time_range.end]
            busy = sum(e.cpu_time_total for e in inside) / 1000
        rows.append({"step": i, "host_ms": round(ms, 3), "device_busy_ms": round(busy, 3),
                     "device_busy_fraction": round(busy / ms, 4) if ms else 0.0, "kernels": len(inside)})
    return rows


def steps_table(rows: list[dict]) -> str:
    lines = ["| step | host ms | device busy ms | busy fraction | kernels |", "|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['host_ms']:,.1f} | {r['device_busy_ms']:,.1f} | {r['device_busy_fraction']:.0%} | "
              f"{r['kernels']} |" for r in rows]
    return "\n".join(lines) + "\n"


def top_ops_table(prof, cuda: bool, n: int = 15) -> str:
    """The ops with the most self device time (self CPU time on a CPU), over all profiled steps."""
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    ops = sorted((a for a in prof.key_averages() if not a.key.startswith("step ")),
                 key=lambda a: getattr(a, key), reverse=True)[:n]
    total = sum(getattr(a, key) for a in prof.key_averages() if not a.key.startswith("step ")) or 1
    lines = [f"| op | calls | self {'device' if cuda else 'CPU'} ms | share |", "|---|---|---|---|"]
    lines += [f"| `{a.key}` | {a.count} | {getattr(a, key) / 1000:,.1f} | {getattr(a, key) / total:.1%} |" for a in ops]
    return "\n".join(lines) + "\n"


def main(preset: str, variant: str, steps: int, warmup: int, overrides: dict[str, str], results_dir: str) -> int:
    out = profile_steps(preset, variant, steps, warmup, overrides, results_dir)
    print((out / "top_ops.md").read_text())
    print(f"trace: {out / 'trace.json'} (open in ui.perfetto.dev or chrome://tracing)")
    return 0
