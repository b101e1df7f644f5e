"""GPU counts from Nsight Compute (lab.profiling.ncu_counts): ncu's raw page as CSV parsed
into one step's counts, and the gate deciding a CUDA benchmark on them.

The fixture follows ncu's documented `--csv --page raw` layout (a header row, a units row, one
row per kernel). Its kernel names are those of the stored H200 report of the transformer block
(torch-compile, infer, float32: the cuBLAS FFMA GEMM, Inductor's Triton kernels and the
memory-efficient attention); that report is a binary .ncu-rep that only ncu reads, and it was
collected before these metrics were asked for, so the values here are made up, in the units
and magnitudes ncu prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.counts import gate as counts_gate
from lab.judge import gate as regression
from lab.profiling import ncu_counts
from lab.profiling import trace_pass as profile

GEMM = ("sm80_xmma_gemm_f32f32_f32f32_f32_tn_n_tilesize128x128x8_stage3_warpsize2x2x1_ffma_"
        "aligna4_alignc4_execute_kernel__5x_cublas")
ATTN = ("fmha_cutlassF_f32_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel"
        "<float, cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)")
LN = "triton_per_fused_native_layer_norm_0"
GELU = "triton_poi_fused__unsafe_view_add_gelu_5"

HEAD = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
        '"Block Size","Grid Size","Device","CC","dram__bytes_read.sum","dram__bytes_write.sum",'
        '"gpc__cycles_elapsed.max","gpu__time_duration.sum","launch__grid_size",'
        '"smsp__inst_executed.sum"')
# (kernel, instructions, DRAM read, DRAM write, cycles, ns)
KERNELS = [(LN, 1_245_184, 33_554_432, 33_587_200, 41_000, 20_710),
           (GEMM, 402_653_184, 50_331_648, 100_663_296, 2_050_000, 1_035_450),
           (ATTN, 118_489_088, 100_663_296, 33_554_432, 1_216_000, 614_130),
           (GEMM, 402_653_184, 50_331_648, 100_663_296, 2_050_000, 1_035_450),
           (GELU, 3_145_728, 134_217_728, 134_217_728, 140_000, 70_700)]


def _csv(kernels=KERNELS, scaled: bool = False) -> str:
    """The raw page as ncu writes it: base units, or (scaled) ncu's auto units with quoted
    numbers and thousands separators, after ncu's own ==PROF== lines."""
    units = ('"","","","","","","","","","","","{b}","{b}","cycle","{t}","","inst"'
             .format(b="Mbyte" if scaled else "byte", t="usecond" if scaled else "nsecond"))
    lines = ["==PROF== Disconnected from process 4242"] if scaled else []
    lines += [HEAD, units]
    for i, (name, inst, rd, wr, cyc, ns) in enumerate(kernels):
        if scaled:
            fields = [f"{rd / 1e6:.6f}", f"{wr / 1e6:.6f}", f"{cyc:,}", f"{ns / 1e3:.2f}",
                      "1,024", f"{inst:,}"]
        else:
            fields = [str(rd), str(wr), str(cyc), str(ns), "1024", str(inst)]
        cells = [str(i), "4242", "python", "127.0.0.1", name, "1", "7", "(256, 1, 1)",
                 "(1024, 1, 1)", "0", "9.0", *fields]
        lines.append(",".join(f'"{c}"' for c in cells))
    return "\n".join(lines) + "\n"


def test_one_steps_kernels_sum_into_the_cells_counts():
    entry = ncu_counts.counts_from_csv(_csv())
    assert entry["status"] == "ok" and entry["tool"] == "ncu" and entry["kernels"] == 5
    assert entry["inst_per_step"] == sum(k[1] for k in KERNELS)  # integers: exact
    assert entry["dram_bytes_per_step"] == sum(k[2] + k[3] for k in KERNELS)
    assert entry["cycles_per_step"] == sum(k[4] for k in KERNELS)
    assert entry["duration_ns_per_step"] == sum(k[5] for k in KERNELS)
    assert [k["name"] for k in entry["per_kernel"]] == [k[0] for k in KERNELS]


def test_scaled_units_and_thousands_separators_read_as_base_units():
    base, scaled = ncu_counts.counts_from_csv(_csv()), ncu_counts.counts_from_csv(
        _csv(scaled=True))
    assert scaled["status"] == "ok"
    assert scaled["inst_per_step"] == base["inst_per_step"]
    # Mbyte with six decimals and usecond with two: exact to the printed digits
    assert scaled["dram_bytes_per_step"] == pytest.approx(base["dram_bytes_per_step"], abs=10)
    assert scaled["duration_ns_per_step"] == pytest.approx(base["duration_ns_per_step"],
                                                           abs=5 * 10)


def test_a_report_without_the_instruction_counter_gives_no_counts():
    without = _csv().replace("smsp__inst_executed.sum", "sm__warps_launched.sum")
    entry = ncu_counts.counts_from_csv(without)
    assert entry["status"] == "run_error" and "smsp__inst_executed.sum" in entry["reason"]
    assert ncu_counts.counts_from_csv("not,a,report\n")["status"] == "run_error"
    bad_unit = _csv().replace('"nsecond"', '"furlong"')
    assert "furlong" in ncu_counts.counts_from_csv(bad_unit)["reason"]


def test_the_profile_asks_ncu_for_the_counters_and_exports_base_units():
    command = profile._nsight_command("ncu", "ncu", Path("r"), kernels_per_step=5)
    assert command[command.index("--metrics") + 1].split(",") == list(ncu_counts.METRICS)
    export = profile.ncu_export_command("ncu", Path("r.ncu-rep"))
    assert export[export.index("--print-units") + 1] == "base"


def _cell(counts: dict) -> dict:
    cell = {"name": "transformer", "status": "ok", "samples_s": [5e-3] * 5,
            "process_medians_s": [5e-3, 5.1e-3, 4.9e-3], "processes": 3, "counts": counts}
    return {"benchmarks": [{"name": "transformer", "extra_info": cell,
                            "stats": {"data": cell["samples_s"]}}], "lab": {"complete": True}}


def test_the_gate_decides_a_cuda_benchmark_on_gpu_instructions():
    base = ncu_counts.counts_from_csv(_csv())
    # one GEMM launched with a 5% larger grid: 5% more of its instructions, ~2.4% of the step
    bigger = [KERNELS[0], (GEMM, 422_785_843, *KERNELS[1][2:]), *KERNELS[2:]]
    cand = ncu_counts.counts_from_csv(_csv(bigger))
    (row,) = regression.compare_runs(_cell(base), _cell(cand), 0.05)
    assert row.decided_by == "counts" and row.counts_tool == "ncu"
    assert row.verdict == "regressed" and 1.02 < row.counts_ratio < 1.03
    assert "GPU instructions/step (ncu)" in row.note() and "DRAM bytes 1.0000x" in row.note()
    (row,) = regression.compare_runs(_cell(base), _cell(dict(base)), 0.05)
    assert row.verdict == "unchanged" and row.decided_by == "counts"


def test_counts_of_different_counters_or_code_paths_do_not_compare():
    gpu = ncu_counts.counts_from_csv(_csv())
    cpu = {"status": "ok", "tool": "callgrind", "ir_per_step": gpu["inst_per_step"]}
    (row,) = regression.compare_runs(_cell(cpu), _cell(gpu), 0.05)
    assert row.decided_by == "wall time"
    sse = {**cpu, "isa_env": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}}
    assert not counts_gate.comparable(cpu, sse) and counts_gate.comparable(sse, dict(sse))
    (row,) = regression.compare_runs(_cell(cpu), _cell(sse), 0.05)
    assert row.decided_by == "wall time"
