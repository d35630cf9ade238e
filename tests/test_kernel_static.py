"""The BN+ReLU kernels compiled for sm_80 and sm_90 on this CPU (bench.kernel_static), no GPU needed.

The interpreter checks the arithmetic; only the compiler shows what a GPU would run. One subprocess (Triton
must compile, not interpret: conftest sets TRITON_INTERPRET) compiles every kernel as the launchers launch it
at the model's BN shapes (batch 512), bf16 and fp32, channels-last and NCHW, training forward and backward,
for both targets; the tests read its rows. A compile error fails the fixture. Compiles and
their read-outs are cached under Triton's cache dir, so a second run reads them back (cold, 88 compiles: 76 s of
CPU on a 2-core AVX2 EPYC; warm: 18 s).
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

from bench import kernel_static  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

REDUCTIONS = ("_bn_relu_fwd_stats_kernel", "_bn_relu_bwd_reduce_kernel")
# the training step's kernels; eval forward (apply without the batch statistics, 48-64 registers in
# results/kernels_static.csv) and eval backward are left to the CLI: 88 distinct compiles here, not 108
PASSES = ("train-fwd", "train-bwd")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernel_static") / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "bench.kernel_static", f"--json={out}", f"--passes={','.join(PASSES)}"],
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
