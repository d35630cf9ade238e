"""The BN+ReLU kernels compiled for sm_80 and sm_90 on this CPU (bench.tools.kernel_static), no GPU needed.

The interpreter checks the arithmetic; only the compiler shows what a GPU would run. One subprocess (Triton
must compile, not interpret: conftest sets TRITON_INTERPRET) compiles every kernel as the launchers launch it
at the model's BN shapes (batch 512), bf16 and fp32, channels-last and NCHW, training forward and backward,
for both targets; the tests read its rows. A compile error fails the fixture. Compiles and
their read-outs are cached under Triton's cache dir, so a second run reads them back (cold, 88 compiles: 76 s of
CPU on a 2-core AVX2 EPYC; warm: 18 s).
"""
import csv
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

from bench.tools import kernel_static  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

REDUCTIONS = ("_bn_relu_fwd_stats_kernel", "_bn_relu_bwd_reduce_kernel")
# the training step's kernels; eval forward (apply without the batch statistics, 48-64 registers in
# results/kernels_static.csv) and eval backward are left to the CLI: 88 distinct compiles here, not 108
PASSES = ("train-fwd", "train-bwd")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernel_static") / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "bench.tools.kernel_static", f"--json={out}", f"--passes={','.join(PASSES)}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"compile for sm_80/sm_90 failed:\n{run.stderr[-4000:]}"
    return json.loads(out.read_text())


def _label(r):
    return f"{r['target']} {r['pass']} {r['kernel']} {r['shape']} {r['dtype']} {r['layout']}"


def test_every_kernel_compiles_for_both_targets_at_every_model_shape(rows):
    shapes = {"x".join(map(str, s)) for s in kernel_static.model_bn_shapes(512)}
    assert shapes == {"512x64x32x32", "512x128x16x16", "512x256x8x8", "512x512x4x4"}
    seen = {(r["target"], r["pass"], r["shape"], r["dtype"], r["layout"]) for r in rows}
    assert len(seen) == 2 * len(PASSES) * len(shapes) * 2 * 2
    assert {r["kernel"] for r in rows} == set(kernel_static.KERNEL_ACCESSES)


def test_no_spills_at_the_model_shapes(rows):
    spills = [f"{_label(r)}: {r['registers']} regs, {r['spill_store_bytes']} B spill stores" for r in rows
              if r["spill_store_bytes"] or r["spill_load_bytes"]]
    assert not spills, "\n".join(spills)


def test_bf16_channels_last_kernels_keep_four_programs_resident_per_sm(rows):
    low = [f"{_label(r)}: {r['resident_per_sm']} resident ({r['registers']} regs, {r['occupancy_limit']})"
           for r in rows if r["dtype"] == "bf16" and r["layout"] == "channels_last" and r["resident_per_sm"] < 4]
    assert not low, "\n".join(low)


def test_bf16_channels_last_hot_path_is_vector_loads_and_stores_without_fp64(rows):
    for r in rows:
        if r["dtype"] != "bf16" or r["layout"] != "channels_last":
            continue
        assert r["hot_load_widest"].startswith("ld.global.v"), _label(r)
        if r["kernel"] not in REDUCTIONS:  # the reductions store partials after their loop, not in it
            assert r["hot_store_widest"].startswith("st.global.v"), _label(r)
        assert r["hot_scalar_accesses"] == 0, f"{_label(r)}: {r['hot_scalar_accesses']} scalar global accesses"
        assert r["hot_f64_instructions"] == 0, _label(r)


def test_ticket_is_one_acq_rel_atomic_after_a_barrier(rows):
    for r in rows:
        if r["kernel"] in REDUCTIONS:
            assert "acq_rel" in r["ticket_atomic"] and "no barrier" not in r["ticket_atomic"], _label(r)
        else:
            assert r["ticket_atomic"] == "", _label(r)


def test_reductions_fill_every_sm_about_four_times(rows):
    """4 per SM, rounded to whole tiles per program (3.2 at 512x512x4x4 on 108 SMs: 128 tiles, 3 per program)."""
    for r in rows:
        if r["kernel"] in REDUCTIONS:
            assert 3 <= r["programs_per_sm"] <= 5, f"{_label(r)}: {r['programs_per_sm']} programs per SM"


def test_bytes_per_pass_are_3e_forward_and_5e_backward(rows):
    for r in rows:
        n, c, h, w = map(int, r["shape"].split("x"))
        e_bytes = n * c * h * w * (2 if r["dtype"] == "bf16" else 4)
        assert r["pass_bytes"] == {"train-fwd": 3, "train-bwd": 5}[r["pass"]] * e_bytes, _label(r)


# ---- the read-outs themselves, on inputs written by hand (no compile) ----

PTX = """
\t.loc\t1 10 0
\tld.global.b32 %r1, [%rd1];
\t.loc\t1 20 5
\t@%p1 ld.global.v4.b32 { %r2, %r3, %r4, %r5 }, [ %rd2 + 0 ];
\t.loc\t2 300 1, function_name $L__info_string0, inlined_at 1 21 3
\tcvt.rn.f32.f64 %f1, %fd1;
\t.loc\t1 22 5
\tst.global.b16 [ %rd3 + 0 ], %rs1;
\tbar.sync 0;
\tatom.global.gpu.acq_rel.add.u32 %r6, [%rd4], 1;
\t.file\t1 "/x/kernels/bn_relu.py"
\t.file\t2 "/x/triton/language/standard.py"
"""


def test_read_ptx_attributes_instructions_to_hot_lines_through_inlining():
    got = kernel_static.read_ptx(PTX, "bn_relu.py", hot={20, 21, 22})
    assert got["hot_load_widest"] == "ld.global.v4.b32"  # line 10's scalar load is outside the hot path
    assert got["hot_store_widest"] == "st.global.b16" and got["hot_scalar_accesses"] == 1
    assert got["hot_f64_instructions"] == 1 and got["f64_instructions"] == 1  # inlined at hot line 21
    assert got["ticket_atomic"] == "atom.global.gpu.acq_rel.add.u32"
    assert "no barrier" in kernel_static.read_ptx(PTX.replace("bar.sync 0;", ""), "bn_relu.py", set())["ticket_atomic"]


def test_resident_programs_from_registers_warps_and_shared_memory():
    smem = kernel_static.TARGETS["sm_90"][3]
    assert kernel_static.resident_programs(139, 4, 1024, smem) == (3, "registers")  # the 3 per SM
    assert kernel_static.resident_programs(94, 4, 1024, smem) == (5, "registers")
    assert kernel_static.resident_programs(24, 4, 0, smem) == (16, "threads")
    assert kernel_static.resident_programs(32, 1, 100 * 1024, smem) == (2, "shared")


# ---- the command's own options: checked before any compile or write ----

OLD_CSV = "target,pass\nsm_90,train-fwd\n"


@pytest.fixture
def no_compile(tmp_path, monkeypatch):
    """A results folder holding a previous kernels_static.csv; compiling (static_rows) records its selection and
    returns `rows`, so a test sees whether a command got as far as compiling and what it wrote."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # else main re-runs itself in a subprocess first
    (tmp_path / "kernels_static.csv").write_text(OLD_CSV)
    calls, rows = [], []
    monkeypatch.setattr(kernel_static, "static_rows", lambda *sel, **k: calls.append(sel) or list(rows))
    return tmp_path, calls, rows


@pytest.mark.parametrize("option, needle", [
    ("--targets=sm_75", "choose a comma list of sm_90, sm_80"),
    ("--dtypes=fp16", "choose a comma list of bf16, fp32"),
    ("--layouts=foo", "choose a comma list of channels_last, nchw"),
    ("--passes=nope", "choose a comma list of train-fwd, eval-fwd, train-bwd, eval-bwd"),
    ("--passes=train-fwd,nope", "unknown 'nope'"),
    ("--targets=", "none given"),
    ("--dtype=bf16", "unrecognized arguments: --dtype=bf16"),
])
def test_unknown_selection_is_one_line_before_any_compile_or_write(capsys, no_compile, option, needle):
    from bench.cli import main
    res, calls, _ = no_compile
    rc = main(["kernel-static", option, f"--results-dir={res}"])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("config error: ") and needle in err, err
    assert calls == [], "compiled"
    assert [p.name for p in res.iterdir()] == ["kernels_static.csv"]
    assert (res / "kernels_static.csv").read_text() == OLD_CSV


def test_a_known_selection_compiles_it_and_replaces_the_csv(capsys, no_compile):
    """The control for the refusals above: the same command with known names compiles what was asked."""
    from bench.cli import main
    res, calls, rows = no_compile
    rows.append({"target": "sm_80", "pass": "eval-bwd", "dtype": "fp32"})
    assert main(["kernel-static", "--targets=sm_80", "--dtypes=fp32", "--layouts=nchw", "--passes=eval-bwd",
                 f"--results-dir={res}"]) == 0
    assert calls == [(("sm_80",), ("fp32",), ("nchw",), ("eval-bwd",))]
    text = (res / "kernels_static.csv").read_text().splitlines()
    assert text[0] == ",".join(kernel_static.COLUMNS) and text[1].startswith("sm_80,,,eval-bwd,,fp32,") and len(text) == 2
    assert "1 rows -> " in capsys.readouterr().out


def test_a_write_that_fails_midway_leaves_the_previous_csv(no_compile):
    res, _, rows = no_compile
    rows += [{"target": "sm_80"}, {"target": "sm_90", "not_a_column": 1}]  # the second row fails in the writer
    with pytest.raises(ValueError, match="not_a_column"):
        kernel_static.main(str(res), [])
    assert (res / "kernels_static.csv").read_text() == OLD_CSV
    assert [p.name for p in res.iterdir()] == ["kernels_static.csv"]  # no temporary file left either


def test_the_module_run_directly_refuses_in_one_line_too(tmp_path):
    """`python -m bench.tools.kernel_static` is how the CLI re-runs itself without the Triton interpreter."""
    run = subprocess.run([sys.executable, "-m", "bench.tools.kernel_static", "--passes=nope", f"--results-dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stdout == "", (run.stdout, run.stderr)
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("config error: --passes='nope'"), run.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_results_path_that_cannot_take_the_csv_is_refused_before_any_compile(no_compile, tmp_path):
    from bench.records.results import ResultsError
    _, calls, _ = no_compile
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir" / "kernels_static.csv").mkdir(parents=True)
    with pytest.raises(ResultsError, match="file is a file, not a folder: pass --results-dir="):
        kernel_static.main(str(tmp_path / "file"), [])
    with pytest.raises(ResultsError, match="kernels_static.csv is a folder where the CSV should be"):
        kernel_static.main(str(tmp_path / "dir"), [])
    with pytest.raises(ResultsError, match="kernels_static.csv does not exist: `python -m bench kernel-static"):
        kernel_static.main(str(tmp_path / "nowhere"), ["--table"])  # nothing written yet to show
    assert calls == []


# ---- each column read from the field it names (stand-in compiles and tools, no compile) ----

READ = dict(num_warps=4, shared_bytes=3000, async_copies=2, registers=77, stack_bytes=16, spill_store_bytes=8,
            spill_load_bytes=24, hot_load_widest="ld.global.v4.b32", hot_store_widest="st.global.v2.b16",
            hot_scalar_accesses=5, hot_f64_instructions=6, f64_instructions=9, ticket_atomic="atom.global.x",
            compile_s=1.5)  # every value distinct, so a column read from the wrong field shows


def test_static_rows_take_each_column_from_the_field_it_names(monkeypatch):
    """Two launches of one pass: the first limited by its registers, the second by its shared memory."""
    from types import SimpleNamespace
    kernel = SimpleNamespace(fn=SimpleNamespace(__name__="_bn_relu_fwd_apply_kernel"))  # 2 accesses of x
    reads = [dict(READ), dict(READ, shared_bytes=60000)]
    monkeypatch.setattr(kernel_static, "pass_launches", lambda *a: [(kernel, (7, 3), (), {}), (kernel, (1, 1), (), {})])
    monkeypatch.setattr(kernel_static, "compile_and_read", lambda *a: reads.pop(0))
    rows = kernel_static.static_rows(("sm_80",), ("bf16",), ("nchw",), ("eval-fwd",), shapes=[(8, 16, 4, 4)],
                                     log=lambda *_: None)
    row = rows[0]
    for column, value in READ.items():
        if column in kernel_static.COLUMNS:
            assert row[column] == value, column
    assert "compile_s" not in row and set(row) == set(kernel_static.COLUMNS)
    e_bytes = 2 * 8 * 16 * 4 * 4  # bf16
    assert (row["target"], row["gpu"], row["kernel"], row["pass"], row["shape"], row["dtype"], row["layout"]) == (
        "sm_80", "A100", "_bn_relu_fwd_apply_kernel", "eval-fwd", "8x16x4x4", "bf16", "nchw")
    assert (row["grid_programs"], row["programs_per_sm"]) == (21, round(21 / 108, 2))  # 108 SMs on an A100
    assert row["kernel_bytes"] == 2 * e_bytes and row["pass_bytes"] == 4 * e_bytes  # two launches of 2 accesses
    assert (row["copy_gb_per_s"], row["pass_us_at_100pct"], row["pass_us_at_60pct"]) == (
        1550.0, round(4 * e_bytes / 1550 / 1e3, 2), round(4 * e_bytes / (0.6 * 1550) / 1e3, 2))
    # 77 registers -> 2560 per warp -> 25 warps -> 6 programs of 4 warps (threads allow 16, 3000 B of shared 55)
    assert (row["resident_per_sm"], row["occupancy_limit"]) == (6, "registers")
    # 60,000 B of shared (+1,024 reserved) in an A100 SM's 164 KiB: 2 programs
    assert (rows[1]["shared_bytes"], rows[1]["resident_per_sm"], rows[1]["occupancy_limit"]) == (60000, 2, "shared")


def test_resources_reads_registers_stack_and_spills_from_their_fields(monkeypatch):
    from types import SimpleNamespace
    usage = "Function k:\n REG:40 STACK:24 SHARED:512 LOCAL:8 CONSTANT[0]:400 TEXTURE:0 SURFACE:0 SAMPLER:0\n"
    log = "ptxas info    : Used 40 registers, 12 bytes spill stores, 20 bytes spill loads\n"
    ran = []

    def run(cmd, **k):
        ran.append(cmd[0].rsplit("/", 1)[-1])
        return SimpleNamespace(stdout=usage, stderr=log if "ptxas" in cmd[0] else "")
    monkeypatch.setattr(kernel_static, "subprocess", SimpleNamespace(run=run))
    ptx = ".version 8.7\n.target sm_90a\n"
    want = dict(registers=40, stack_bytes=24, spill_store_bytes=12, spill_load_bytes=20)
    assert kernel_static._resources(b"cubin", ptx, 90, log) == want and ran == ["cuobjdump"]
    ran.clear()
    assert kernel_static._resources(b"cubin", ptx, 90, "") == want  # no log from Triton: ptxas -v on the PTX
    assert ran[0] == "cuobjdump" and ran[1].startswith("ptxas")


def test_the_markdown_table_takes_each_cell_from_its_column(tmp_path):
    row = {c: f"<{c}>" for c in kernel_static.COLUMNS}
    row.update(dtype="bf16", layout="channels_last", **{"pass": "train-fwd"}, kernel="_bn_relu_fwd_stats_kernel",
               spill_store_bytes="3", spill_load_bytes="4", pass_bytes="2500000")
    with open(tmp_path / "k.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=kernel_static.COLUMNS)
        w.writeheader()
        w.writerow(row)
    head, _, line = kernel_static.markdown_table(tmp_path / "k.csv").splitlines()
    cells = dict(zip([h.strip() for h in head.strip("|").split("|")], [c.strip() for c in line.strip("|").split("|")]))
    assert cells == {"target": "<target>", "pass": "train-fwd", "shape": "<shape>", "kernel": "fwd_stats",
                     "programs": "<grid_programs>", "per SM": "<programs_per_sm>", "regs": "<registers>",
                     "spill B": "7", "smem B": "<shared_bytes>", "resident/SM": "<resident_per_sm> (<occupancy_limit>)",
                     "hot load": "<hot_load_widest>", "hot store": "<hot_store_widest>",
                     "hot f64": "<hot_f64_instructions>", "pass MB": "2.5", "pass µs 100%": "<pass_us_at_100pct>",
                     "pass µs 60%": "<pass_us_at_60pct>"}


# ---- the disk cache of read-outs follows the read-out code ----

def test_changed_readout_code_misses_the_disk_cache(monkeypatch):
    """The read-outs are cached on disk by compile key and a hash of the read-out code: a change to any of its
    functions or patterns gives another key, so a warm cache does not serve read-outs of the old code."""
    import re
    from types import SimpleNamespace
    options = SimpleNamespace(num_warps=4)
    key = kernel_static.cache_key("abc", "cuda:90", options)
    assert key == kernel_static.cache_key("abc", "cuda:90", options)  # stable: a warm cache is used
    assert key != kernel_static.cache_key("abd", "cuda:90", options) != kernel_static.cache_key("abc", "cuda:80", options)

    def other(*a, **k):  # any other code
        return {}
    for name in kernel_static.READOUT_CODE:
        with monkeypatch.context() as m:
            m.setattr(kernel_static, name, other)
            assert kernel_static.cache_key("abc", "cuda:90", options) != key, name
    for name in kernel_static.READOUT_PATTERNS:
        with monkeypatch.context() as m:
            m.setattr(kernel_static, name, re.compile(getattr(kernel_static, name).pattern + "x"))
            assert kernel_static.cache_key("abc", "cuda:90", options) != key, name
    assert {"read_ptx", "_resources", "hot_lines", "compile_and_read"} <= set(kernel_static.READOUT_CODE)


def test_compile_and_read_serves_the_disk_cache_only_under_todays_key(monkeypatch, tmp_path):
    import triton
    from types import SimpleNamespace

    from triton import knobs
    src, options = SimpleNamespace(hash=lambda: "abc"), SimpleNamespace(num_warps=4)
    monkeypatch.setattr(kernel_static, "compile_source", lambda *a: (src, options, "cuda:90"))
    monkeypatch.setattr(knobs.cache, "dir", str(tmp_path))
    cached = tmp_path / "kernel_static" / f"{kernel_static.cache_key('abc', 'cuda:90', options)}.json"
    cached.parent.mkdir()
    cached.write_text(json.dumps({"registers": 99}))
    assert kernel_static.compile_and_read(None, (), {}, 90, {}) == {"registers": 99}

    def compile(*a, **k):
        raise RuntimeError("compiled")
    monkeypatch.setattr(triton, "compile", compile)
    monkeypatch.setattr(kernel_static, "readout_version", lambda: "changed read-out code")
    with pytest.raises(RuntimeError, match="compiled"):  # the old read-out is not served
        kernel_static.compile_and_read(None, (), {}, 90, {})
