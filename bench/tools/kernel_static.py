"""`make kernels-static`: the BN+ReLU Triton kernels compiled for sm_80 and sm_90 on a CPU, no GPU needed.

Every @triton.jit kernel is compiled as its launcher would launch it: kernels.bn_relu.forward_launches /
backward_launches are called on meta tensors of the model's BN inputs (batch 512; shapes from a meta-device
forward of CustomResNet) with the target's SM count, and Triton's own argument binder turns their arguments
into the signature, constexprs and specialisations a real launch would compile. Each compile is read back:
registers, stack and shared memory (cuobjdump --dump-resource-usage on the cubin), spill bytes (the ptxas -v
log), resident programs per SM (from registers, warps and shared memory), and from the PTX the global loads
and stores of the hot path (the code from the `_tile` call to the end of its block: the tile loop of the
reductions, the whole tile of the elementwise kernels; mapped through the PTX line info), its fp64
instructions, and the ticket atomic. Predicted times use the bytes each pass must move (kernels/bn_relu.py
docstring) at 100% and 60% of a copy bandwidth: H200 4,250 GB/s (measured 2026-11-28), A100 1,550 GB/s.
Nothing here ran on a GPU. Each compile's read-out is cached under Triton's cache dir by its compile key and a hash
of the read-out code (`readout_version`): changed read-out code is rerun, not served from a warm cache.

Triton must compile, not interpret: run in a process without TRITON_INTERPRET (main re-runs itself in a
subprocess without it when it is set). Uses Triton 3.9's JITFunction binder and _pack_args (private API).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import hashlib
import inspect
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from bench.core.config import ConfigError
from bench.records.results import ResultsError, atomic_write
from bench.records.results import write_csv as write_rows  # this module's write_csv takes (rows, path)

# target -> (capability, GPU it stands for, SMs, shared memory per SM bytes, copy bandwidth GB/s)
TARGETS = {"sm_90": (90, "H200", 132, 228 * 1024, 4250.0), "sm_80": (80, "A100", 108, 164 * 1024, 1550.0)}
REGS_PER_SM, THREADS_PER_SM, BLOCKS_PER_SM, SMEM_RESERVED_PER_BLOCK = 65536, 2048, 32, 1024  # sm_80 and sm_90
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}
PASSES = ("train-fwd", "eval-fwd", "train-bwd", "eval-bwd")
# elements of x's size each kernel reads + writes (per-channel vectors and partials are tiny and left out)
KERNEL_ACCESSES = {"_bn_relu_fwd_stats_kernel": 1, "_bn_relu_fwd_apply_kernel": 2,
                   "_bn_relu_bwd_reduce_kernel": 2, "_bn_relu_bwd_dx_kernel": 3}
COLUMNS = ("target", "gpu", "kernel", "pass", "shape", "dtype", "layout", "grid_programs", "programs_per_sm",
           "num_warps", "registers", "spill_store_bytes", "spill_load_bytes", "stack_bytes", "shared_bytes",
           "resident_per_sm", "occupancy_limit", "hot_load_widest", "hot_store_widest", "hot_scalar_accesses",
           "hot_f64_instructions", "f64_instructions", "ticket_atomic", "async_copies", "kernel_bytes", "pass_bytes",
           "copy_gb_per_s", "pass_us_at_100pct", "pass_us_at_60pct", "triton_version", "git_commit", "device")


def model_bn_shapes(batch: int = 512) -> list[tuple[int, int, int, int]]:
    """The distinct BatchNorm input shapes of CustomResNet at this batch, in network order (meta forward)."""
    from model import CustomResNet
    with torch.device("meta"):
        net = CustomResNet()
    shapes: list[tuple[int, int, int, int]] = []
    hooks = [m.register_forward_hook(lambda m, inp, out: shapes.append(tuple(inp[0].shape)))
             for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    net(torch.empty(batch, 3, 32, 32, device="meta"))
    for h in hooks:
        h.remove()
    return list(dict.fromkeys(shapes))


def pass_launches(shape, dtype: torch.dtype, layout: str, pass_name: str, sm_count: int) -> list:
    """The launcher's own [(kernel, grid, args, constexprs)] for one pass, on meta tensors (autocast: x in
    dtype, parameters and running statistics fp32)."""
    from kernels import bn_relu
    x = torch.empty(shape, dtype=dtype, device="meta", memory_format=LAYOUTS[layout])
    c = shape[1]
    vec = lambda: torch.empty(c, device="meta")  # noqa: E731
    training = pass_name.startswith("train")
    if pass_name.endswith("fwd"):
        return bn_relu.forward_launches(x, vec(), vec(), vec(), vec(), training, 0.1, 1e-5, sm_count=sm_count)[1]
    acc = bn_relu._acc_dtype(x)
    mean, rstd = torch.empty(c, device="meta", dtype=acc), torch.empty(c, device="meta", dtype=acc)
    return bn_relu.backward_launches(torch.empty_like(x), x, vec(), vec(), mean, rstd, training, sm_count=sm_count)[1]


def compile_source(kernel, args, constexprs, capability: int):
    """(ASTSource, options, target) of the compile a launch of kernel[grid](*args, **constexprs) would make."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature
    if not isinstance(kernel, JITFunction):
        raise RuntimeError(f"{kernel!r} is interpreted: compile in a process without TRITON_INTERPRET")
    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **constexprs)
    options, signature, consts, attrs = kernel._pack_args(backend, constexprs, bound, specialization, options)
    return ASTSource(kernel, signature, consts, attrs), options, target


def hot_lines(kernel) -> set[int]:
    """File lines of the hot path: from the statement calling _tile to the end of its block. When that block is
    the kernel's body, the blank lines after it count too: Triton 3.9 put the fp32 apply kernel's
    `x = tl.load(...).to(acc_ty)` (a no-op cast) three lines below the statement, on the blank line after the
    kernel (bn_relu.py 167:13 for a load at 164:13)."""
    lines, start = inspect.getsourcelines(kernel.fn)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    body = tree.body[0].body
    for node in ast.walk(tree):
        block = getattr(node, "body", None)
        for stmt in block if isinstance(block, list) else []:
            calls = [n for n in ast.walk(stmt) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "_tile"]
            if calls and isinstance(stmt, (ast.Assign, ast.Expr)):
                end = start + block[-1].end_lineno - 1
                if block is body:
                    after = inspect.getsourcefile(kernel.fn)
                    text = Path(after).read_text().splitlines()
                    while end < len(text) and not text[end].strip():
                        end += 1
                return set(range(start + stmt.lineno - 1, end + 1))
    raise ValueError(f"{kernel.fn.__name__}: no _tile call, no hot path")


_LOC = re.compile(r"\s*\.loc\s+(\d+)\s+(\d+)\s+(\d+)(?:.*inlined_at\s+(\d+)\s+(\d+)\s+(\d+))?")
_FILE = re.compile(r'\s*\.file\s+(\d+)\s+"([^"]*)"(?:,\s*"([^"]*)")?')
_MEM = re.compile(r"(ld|st)\.global(?:\.[a-z]+)*?(?:\.v(\d))?\.[bfsu](\d+)\b")


def read_ptx(ptx: str, kernel_file: str, hot: set[int]) -> dict:
    """Global accesses, fp64 instructions and the ticket atomic of the PTX; hot = attributed by line info
    (the kernel-file line each instruction was inlined at) to the hot lines."""
    files = {m[1]: (m[3] or m[2]).rsplit("/", 1)[-1] for m in map(_FILE.match, ptx.splitlines()) if m}
    where: dict[tuple[str, str, str], int | None] = {}
    line: int | None = None
    widest = {"ld": 0, "st": 0}
    names = {"ld": "", "st": ""}
    scalar = hot_f64 = f64 = 0
    atomic, barrier_before_atomic = "", False
    saw_barrier = False
    for text in ptx.splitlines():
        if m := _LOC.match(text):
            own = int(m[2]) if files.get(m[1]) == kernel_file else None
            if m[4]:  # inlined: the kernel line the call sits at (the parent's, resolved when it was seen)
                parent = int(m[5]) if files.get(m[4]) == kernel_file else None
                own = where.get((m[4], m[5], m[6]), parent)
            where[(m[1], m[2], m[3])] = line = own
            continue
        op = text.strip().split()
        if not op or op[0].startswith((".", "//", "$", "{", "}")):
            continue
        op = op[1] if op[0].startswith("@") and len(op) > 1 else op[0]
        is_hot = line in hot
        if ".f64" in op:
            f64 += 1
            hot_f64 += is_hot
        if op.startswith("bar.sync") or op.startswith("barrier"):
            saw_barrier = True
        if op.startswith("atom.global"):
            atomic, barrier_before_atomic = op, saw_barrier
        if is_hot and (m := _MEM.match(op)):
            bits = int(m[2] or 1) * int(m[3])
            scalar += m[2] is None
            if bits > widest[m[1]]:
                widest[m[1]], names[m[1]] = bits, op
    return dict(hot_load_widest=names["ld"], hot_store_widest=names["st"], hot_scalar_accesses=scalar,
                hot_f64_instructions=hot_f64, f64_instructions=f64,
                ticket_atomic=(atomic + ("" if barrier_before_atomic else " (no barrier before)")) if atomic else "")


def _resources(cubin: bytes, ptx: str, capability: int, ptxas_log: str) -> dict:
    """Registers, stack and shared memory of the cubin (cuobjdump); spill bytes from the ptxas -v log (Triton's,
    captured while it compiled; ptxas is rerun on the PTX when Triton's cache served the cubin)."""
    from triton import knobs
    from triton.backends.nvidia.compiler import get_ptxas
    arch = re.search(r"\.target\s+(\w+)", ptx)[1]  # sm_90a for capability 90, as Triton compiles it
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "k.cubin").write_bytes(cubin)
        usage = subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-resource-usage", str(Path(tmp) / "k.cubin")],
                               capture_output=True, text=True, check=True).stdout
        if "bytes spill stores" not in ptxas_log:
            (Path(tmp) / "k.ptx").write_text(ptx)
            ptxas_log = subprocess.run([get_ptxas(capability).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
                                        f"--gpu-name={arch}", str(Path(tmp) / "k.ptx"), "-o", str(Path(tmp) / "o")],
                                       capture_output=True, text=True, check=True).stderr
    field = lambda name: int(re.search(rf"\b{name}:(\d+)", usage)[1])  # noqa: E731
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", ptxas_log)
    return dict(registers=field("REG"), stack_bytes=field("STACK"), spill_store_bytes=int(spill[1]),
                spill_load_bytes=int(spill[2]))


READOUT_CODE = ("hot_lines", "read_ptx", "_resources", "compile_and_read")  # what turns a compile into read-outs
READOUT_PATTERNS = ("_LOC", "_FILE", "_MEM")


def readout_version() -> str:
    """A hash of the code that turns a compile into a cached read-out (functions and patterns): part of the cache
    key, so that changed read-out code is rerun on a warm cache (a hand-kept suffix was forgotten when it changed)."""
    g = globals()
    text = "".join(inspect.getsource(g[name]) for name in READOUT_CODE)
    text += "".join(g[name].pattern for name in READOUT_PATTERNS)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(src_hash: str, target, options) -> str:
    """The disk cache's key of one compile's read-out: what is compiled, for which target, and the read-out code."""
    text = f"{src_hash}-{target}-{sorted(options.__dict__.items())}-{readout_version()}"
    return hashlib.sha256(text.encode()).hexdigest()


def compile_and_read(kernel, args, constexprs, capability: int, memo: dict) -> dict:
    """Compile one launch for a capability and read it (memo: this run; disk: Triton's cache dir)."""
    import triton
    from triton import knobs
    src, options, target = compile_source(kernel, args, constexprs, capability)
    key = cache_key(src.hash(), target, options)
    if key in memo:
        return memo[key]
    path = Path(knobs.cache.dir) / "kernel_static" / f"{key}.json"
    if path.exists():
        memo[key] = json.loads(path.read_text())
        return memo[key]
    t0 = time.perf_counter()
    log = io.StringIO()
    with knobs.nvidia.scope(), contextlib.redirect_stdout(log):  # Triton prints ptxas -v's log when asked
        knobs.nvidia.dump_ptxas_log = True
        compiled = triton.compile(src, target=target, options=options.__dict__)
    kernel_file = Path(inspect.getfile(kernel.fn)).name
    out = dict(num_warps=compiled.metadata.num_warps, shared_bytes=compiled.metadata.shared,
               async_copies=compiled.asm["ttgir"].count("async_copy_global_to_local"),
               **_resources(compiled.asm["cubin"], compiled.asm["ptx"], capability, log.getvalue()),
               **read_ptx(compiled.asm["ptx"], kernel_file, hot_lines(kernel)),
               compile_s=round(time.perf_counter() - t0, 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    memo[key] = out
    return out


def resident_programs(registers: int, num_warps: int, shared_bytes: int, smem_per_sm: int) -> tuple[int, str]:
    """Programs (CTAs) one SM holds at once and what limits it: registers (allocated per warp in 256s),
    threads, shared memory (+1 KB the runtime reserves per block), or the 32-block cap."""
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256
    limits = {"registers": REGS_PER_SM // regs_per_warp // num_warps,
              "threads": THREADS_PER_SM // (32 * num_warps),
              "shared": smem_per_sm // (shared_bytes + SMEM_RESERVED_PER_BLOCK),
              "blocks": BLOCKS_PER_SM}
    which = min(limits, key=limits.get)
    return limits[which], which


def static_rows(targets=tuple(TARGETS), dtypes=tuple(DTYPES), layouts=tuple(LAYOUTS), passes=PASSES,
                shapes=None, batch: int = 512, log=print) -> list[dict]:
    """One row per (target, pass, shape, dtype, layout, kernel launched)."""
    import triton
    from bench.core.machine import git_commit
    shapes = shapes or model_bn_shapes(batch)
    memo: dict = {}
    commit = git_commit()
    rows = []
    for tname in targets:
        capability, gpu, sms, smem_per_sm, gbs = TARGETS[tname]
        for shape in shapes:
            for dname in dtypes:
                elems_bytes = torch.tensor([], dtype=DTYPES[dname]).element_size()
                for layout in layouts:
                    for pass_name in passes:
                        launches = pass_launches(shape, DTYPES[dname], layout, pass_name, sms)
                        e_bytes = elems_bytes * shape[0] * shape[1] * shape[2] * shape[3]
                        pass_bytes = sum(KERNEL_ACCESSES[k.fn.__name__] for k, *_ in launches) * e_bytes
                        for kernel, grid, args, constexprs in launches:
                            r = compile_and_read(kernel, args, constexprs, capability, memo)
                            programs = grid[0] * grid[1]
                            resident, limit = resident_programs(r["registers"], r["num_warps"], r["shared_bytes"],
                                                                smem_per_sm)
                            rows.append(dict(
                                target=tname, gpu=gpu, kernel=kernel.fn.__name__, **{"pass": pass_name},
                                shape="x".join(map(str, shape)), dtype=dname, layout=layout, grid_programs=programs,
                                programs_per_sm=round(programs / sms, 2), resident_per_sm=resident,
                                occupancy_limit=limit, **{k: v for k, v in r.items() if k in COLUMNS},
                                kernel_bytes=KERNEL_ACCESSES[kernel.fn.__name__] * e_bytes, pass_bytes=pass_bytes,
                                copy_gb_per_s=gbs, pass_us_at_100pct=round(pass_bytes / gbs / 1e3, 2),
                                pass_us_at_60pct=round(pass_bytes / (0.6 * gbs) / 1e3, 2),
                                triton_version=triton.__version__, git_commit=commit,
                                device="CPU compile-only (no GPU run)"))
                            log(f"{tname} {pass_name:9s} {rows[-1]['shape']:>12s} {dname} {layout:13s} "
                                f"{rows[-1]['kernel']:27s} regs {r['registers']:3d} spill {r['spill_store_bytes']:4d} "
                                f"resident {resident} ({limit}) programs/SM {rows[-1]['programs_per_sm']}")
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    """Replace `path` with the rows in one rename: a compile that fails or a Ctrl-C mid-way leaves the previous CSV."""
    write_rows(path, COLUMNS, rows)  # the one results writer


def markdown_table(path: Path, dtype: str = "bf16", layout: str = "channels_last",
                   passes=("train-fwd", "eval-fwd", "train-bwd")) -> str:
    """The CSV's rows for one dtype and layout as a Markdown table (docs/kernels-static.md)."""
    head = ("target", "pass", "shape", "kernel", "programs", "per SM", "regs", "spill B", "smem B",
            "resident/SM", "hot load", "hot store", "hot f64", "pass MB", "pass µs 100%", "pass µs 60%")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if r["dtype"] != dtype or r["layout"] != layout or r["pass"] not in passes:
            continue
        cells = (r["target"], r["pass"], r["shape"], r["kernel"].removeprefix("_bn_relu_").removesuffix("_kernel"),
                 r["grid_programs"], r["programs_per_sm"], r["registers"],
                 int(r["spill_store_bytes"]) + int(r["spill_load_bytes"]), r["shared_bytes"],
                 f"{r['resident_per_sm']} ({r['occupancy_limit']})", r["hot_load_widest"] or "-",
                 r["hot_store_widest"] or "-", r["hot_f64_instructions"], f"{int(r['pass_bytes']) / 1e6:.1f}",
                 r["pass_us_at_100pct"], r["pass_us_at_60pct"])
        out.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(out)


def _rerun_without_interpreter(argv: list[str]) -> int:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[2]  # this checkout's kernels, not an installed copy's
    return subprocess.run([sys.executable, "-m", "bench.tools.kernel_static", *argv], env=env, cwd=root).returncode


class _Parser(argparse.ArgumentParser):
    """An unknown or malformed option is a ConfigError (one line from the CLI), not argparse's usage text."""

    def error(self, message):
        raise ConfigError(f"kernel-static: {message}; it takes --targets, --dtypes, --layouts, --passes, --json, "
                          f"--table and --results-dir")


def _choice(option: str, text: str, allowed) -> tuple[str, ...]:
    """A comma list of `allowed` names, refused whole (naming the allowed ones) if any is not, or none is given."""
    names = tuple(v for v in text.split(",") if v)
    bad = [v for v in names if v not in allowed]
    if bad or not names:
        raise ConfigError(f"--{option}={text!r}: {'unknown ' + ', '.join(map(repr, bad)) if bad else 'none given'}; "
                          f"choose a comma list of {', '.join(allowed)}")
    return names


def main(results_dir: str = "results", extra: list[str] | None = None) -> int:
    """`python -m bench kernel-static [--targets=..] [--dtypes=..] [--layouts=..] [--passes=..] [--json=F]`;
    `--table` prints the written CSV's bf16 channels-last rows as Markdown without compiling."""
    p = _Parser(prog="python -m bench kernel-static", allow_abbrev=False)
    p.add_argument("--results-dir", "--results_dir", default=results_dir)
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--layouts", default=",".join(LAYOUTS))
    p.add_argument("--passes", default=",".join(PASSES))
    p.add_argument("--json", default="", help="write the rows as JSON here instead of the CSV (tests)")
    p.add_argument("--table", action="store_true", help="the CSV's bf16 channels-last rows as Markdown")
    argv = list(extra or [])
    args = p.parse_args(argv)
    # every selection is checked before any compile: an unknown name would otherwise fail in a lookup mid-way,
    # or (a pass) compile nothing and still replace the CSV with rows of that name
    selection = (_choice("targets", args.targets, TARGETS), _choice("dtypes", args.dtypes, DTYPES),
                 _choice("layouts", args.layouts, LAYOUTS), _choice("passes", args.passes, PASSES))
    out = Path(args.results_dir) / "kernels_static.csv"
    if args.table:
        if not out.is_file():
            raise ResultsError(f"{out} {'is a folder' if out.is_dir() else 'does not exist'}: `python -m bench "
                               f"kernel-static --results-dir={args.results_dir}` writes it (or pass the folder that "
                               f"holds it)")
        print(markdown_table(out))
        return 0
    if not args.json and out.parent.exists() and not out.parent.is_dir():  # found before the compiles, not after
        raise ResultsError(f"results folder {out.parent} is a file, not a folder: pass --results-dir=<a folder>")
    if not args.json and out.is_dir():
        raise ResultsError(f"{out} is a folder where the CSV should be: move it away")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return _rerun_without_interpreter([f"--results-dir={args.results_dir}", *argv])
    t0 = time.perf_counter()
    rows = static_rows(*selection, log=(lambda *_: None) if args.json else print)
    if args.json:
        atomic_write(Path(args.json), json.dumps(rows))
        return 0
    write_csv(rows, out)
    print(f"{len(rows)} rows -> {out} ({time.perf_counter() - t0:.0f} s; CPU compile-only, no GPU run)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main("results", sys.argv[1:]))
    except (ConfigError, ResultsError) as e:  # one line, as the CLI says it
        print(f"{'config' if isinstance(e, ConfigError) else 'results'} error: {e}", file=sys.stderr)
        sys.exit(2)
