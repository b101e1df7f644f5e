"""The hot-kernel table: hand-made traces whose answers are known, and the H200 traces stored
under profiles/ (a transformer block's forward, float32, batch 8, seq 1024, d_model 1024)."""

import gzip
import json
from pathlib import Path

import pytest
from conftest import ROOT

from lab.profiling import hotkernels

H200_CELL = (Path(ROOT) / "profiles" / "nvidia-h200-x1" / "20261128-052754-cuda-profile" /
             "traces" / "transformer-torch-compile-infer-cuda-float32-batch=8-d_model=1024-"
                        "heads=16-seq=1024")
GEMM = "sm80_xmma_gemm_f32f32"  # cuBLAS's float32 GEMM without tensor cores (ffma)
ATTENTION = "fmha_cutlassF_f32"  # PyTorch's memory-efficient attention


def _x(name, ts, dur, tid=1, cat="cpu_op", pid=1, **args):
    event = {"ph": "X", "name": name, "ts": ts, "dur": dur, "pid": pid, "tid": tid, "cat": cat}
    if args:
        event["args"] = args
    return event


def _rows(table, section):
    return {r["name"]: r for r in hotkernels.rows_of(table, section)}


# ---------------------------------------------------------------- CPU traces

def _two_steps():
    """Two 100 us steps; in each, linear (60 us) wraps addmm (50 us), then relu (20 us).
    Step 2's addmm is slower (70 us): medians, not means, decide the table."""
    events = [_x("warm-up op outside any step", 0, 500)]
    for t0, mm in ((1000, 50), (2000, 70)):
        events += [_x("lab::sample", t0, 100 + (mm - 50), cat="user_annotation"),
                   _x("aten::linear", t0 + 5, mm + 10), _x("aten::addmm", t0 + 10, mm),
                   _x("aten::relu", t0 + mm + 20, 20)]
    return events


def test_self_time_counts_nested_ops_once_and_uses_medians():
    table = hotkernels.hot_table(_two_steps())
    rows = _rows(table, "host")
    assert table["steps"] == 2 and table["device_us"] is None
    assert table["step_us"] == pytest.approx(110.0)  # median of 100 and 120
    assert rows["aten::addmm"]["self_us_per_step"] == pytest.approx(60.0)  # median(50, 70)
    assert rows["aten::linear"]["self_us_per_step"] == pytest.approx(10.0)  # 60-50, 80-70
    assert rows["aten::addmm"]["mean_us"] == pytest.approx(60.0)
    assert rows["aten::relu"]["share"] == pytest.approx(20 / 110)
    assert rows["aten::linear"]["count_per_step"] == 1
    assert "warm-up op outside any step" not in rows and "lab::sample" not in rows
    assert [r["name"] for r in table["rows"]][0] == "aten::addmm"
    assert hotkernels.rows_of(table, "device") == [] and set(table["share_of"]) == {"host"}


def test_cpu_kernel_count_is_outermost_ops():
    table = hotkernels.hot_table(_two_steps())
    assert table["kernels_per_step"] == 2  # linear and relu; addmm runs inside linear
    kinds = {r["name"]: r["kind"] for r in table["rows"]}
    # addmm is not counted (nested), but it is a kernel as it is when a compiled graph calls it
    assert kinds == {"aten::linear": "kernel", "aten::relu": "kernel", "aten::addmm": "kernel"}


def test_profiler_step_ranges_are_bookkeeping_not_rows():
    events = _two_steps() + [_x("ProfilerStep#0", 990, 130, cat="user_annotation"),
                             _x("ProfilerStep#1", 1990, 130, cat="user_annotation")]
    table = hotkernels.hot_table(events)
    assert not any(r["name"].startswith("ProfilerStep#") for r in table["rows"])
    assert table["steps"] == 2


def test_xla_ops_are_counted_and_end_markers_dropped():
    events = [_x("lab::sample", 0, 100, cat=None),
              _x("fusion.1", 10, 30, tid=2, cat=None, hlo_op="fusion.1"),
              _x("end: fusion.1", 40, 0.1, tid=2, cat=None),
              _x("dot.2", 50, 30, tid=2, cat=None, hlo_op="dot.2")]
    table = hotkernels.hot_table(events)
    assert table["kernels_per_step"] == 2 and "XLA" in table["kernel_unit"]
    assert {r["name"] for r in table["rows"]} == {"fusion.1", "dot.2"}


def test_trace_without_lab_ranges_is_an_error(tmp_path):
    path = tmp_path / "trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": [_x("aten::mm", 0, 5)]}, f)
    with pytest.raises(hotkernels.TraceError, match="no lab::sample ranges"):
        hotkernels.table_from_trace(path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(hotkernels.TraceError, match="not a readable Chrome trace"):
        hotkernels.load_events(tmp_path / "bad.json")


def test_hot_table_files_round_trip(tmp_path):
    table = hotkernels.hot_table(_two_steps())
    paths = hotkernels.write(table, tmp_path)
    assert json.loads(paths["json"].read_text()) == table
    lines = paths["csv"].read_text().splitlines()
    assert lines[0].startswith("section,name,kind,count_per_step")
    assert len(lines) == 1 + len(table["rows"])


# ---------------------------------------------------------------- CUDA traces, hand-made

def _async_cuda_steps(correlation=True, device_ranges=False):
    """Three 100 us host steps that do not wait for the device: each launches a 30 us GEMM and
    a 10 us add; the device runs each step's kernels 150 us after their launch, i.e. inside
    the *next* step's host range (or after the last). A cudaDeviceSynchronize of 20 us ends
    each host step."""
    events = []
    for k in range(3):
        t0 = 1000 + 100 * k
        events += [_x("lab::sample", t0, 100, cat="user_annotation", **{"External id": k}),
                   _x("cudaLaunchKernel", t0 + 10, 5, cat="cuda_runtime",
                      correlation=10 * k + 1),
                   _x("cudaLaunchKernel", t0 + 20, 5, cat="cuda_runtime",
                      correlation=10 * k + 2),
                   _x("cudaDeviceSynchronize", t0 + 80, 20, cat="cuda_runtime",
                      correlation=10 * k + 3)]
        gemm_args = {"correlation": 10 * k + 1} if correlation else {}
        add_args = {"correlation": 10 * k + 2} if correlation else {}
        events += [_x("gemm", t0 + 160, 30, pid=0, tid=7, cat="kernel", **gemm_args),
                   _x("add", t0 + 190, 10, pid=0, tid=7, cat="kernel", **add_args)]
        if device_ranges:
            events.append(_x("lab::sample", t0 + 158, 45, pid=0, tid=7,
                             cat="gpu_user_annotation", **{"External id": k}))
    return events


def test_async_kernels_belong_to_the_step_that_launched_them():
    table = hotkernels.hot_table(_async_cuda_steps())
    device, host = _rows(table, "device"), _rows(table, "host")
    assert table["device_attribution"] == {"correlation": 6}
    assert table["kernels_per_step"] == 2 and "device" in table["kernel_unit"]
    assert device["gemm"]["count_per_step"] == 1 and device["add"]["count_per_step"] == 1
    assert table["device_us"] == pytest.approx(40.0)
    assert device["gemm"]["share"] == pytest.approx(30 / 40)  # of the step's device time
    assert host["cudaDeviceSynchronize"]["share"] == pytest.approx(20 / 100)  # of host time
    assert host["cudaDeviceSynchronize"]["kind"] == "sync"
    assert host["cudaLaunchKernel"]["kind"] == "runtime"
    assert host["cudaLaunchKernel"]["count_per_step"] == 2
    assert not set(device) & set(host)


def test_without_correlation_the_device_copy_of_the_step_range_decides():
    table = hotkernels.hot_table(_async_cuda_steps(correlation=False, device_ranges=True))
    assert table["device_attribution"] == {"device ranges": 6}
    device = _rows(table, "device")
    assert device["gemm"]["count_per_step"] == 1 and table["kernels_per_step"] == 2
    assert "lab::sample" not in device  # the device copy of the range is not a kernel


def test_device_time_is_the_union_of_overlapping_streams():
    events = [_x("lab::sample", 0, 100, cat="user_annotation"),
              _x("cudaLaunchKernel", 10, 2, cat="cuda_runtime", correlation=1),
              _x("cudaLaunchKernel", 20, 2, cat="cuda_runtime", correlation=2),
              _x("a", 30, 40, pid=0, tid=7, cat="kernel", correlation=1),
              _x("b", 50, 40, pid=0, tid=8, cat="kernel", correlation=2),  # 20 us overlap
              _x("cudaMemsetAsync", 25, 2, cat="cuda_runtime", correlation=3),
              _x("Memset (Device)", 95, 1, pid=0, tid=7, cat="gpu_memset", correlation=3)]
    table = hotkernels.hot_table(events)
    assert table["device_us"] == pytest.approx(61.0)  # 30..90 plus the 1 us memset
    device = _rows(table, "device")
    assert device["Memset (Device)"]["kind"] == "memset"
    assert table["kernels_per_step"] == 2  # a memset is not a kernel


# ---------------------------------------------------------------- the H200 traces

@pytest.fixture(scope="module")
def h200_compiled():
    return hotkernels.table_from_trace(H200_CELL / "torch-compile" / "trace.json")


def test_h200_compiled_block_runs_four_gemms_and_one_attention_per_forward(h200_compiled):
    table = h200_compiled
    device = hotkernels.rows_of(table, "device")
    assert table["steps"] == 7
    assert sum(r["count_per_step"] for r in device if r["name"].startswith(GEMM)) == 4
    assert sum(r["count_per_step"] for r in device if r["name"].startswith(ATTENTION)) == 1
    assert table["kernels_per_step"] == 12  # 4 GEMMs, attention, 7 Triton kernels
    assert all(r["count_per_step"] == int(r["count_per_step"]) for r in device)
    assert table["device_attribution"] == {"correlation": 84}


def test_h200_host_calls_stand_apart_from_device_kernels(h200_compiled):
    device, host = _rows(h200_compiled, "device"), _rows(h200_compiled, "host")
    assert "cudaDeviceSynchronize" in host and "cudaDeviceSynchronize" not in device
    assert host["cudaDeviceSynchronize"]["kind"] == "sync"
    assert all(r["kind"] in ("kernel", "memcpy", "memset") for r in device.values())
    assert not any(name.startswith(("cuda", "cu")) and "Launch" in name for name in device)
    # the float32 GEMMs are most of the device time; shares are of that time, at most all of it
    gemm_share = sum(r["share"] for n, r in device.items() if n.startswith(GEMM))
    assert 0.75 < gemm_share < 0.9
    assert sum(r["share"] for r in device.values()) <= 1.0 + 1e-9
    assert h200_compiled["device_us"] < h200_compiled["step_us"]


def test_h200_eager_block_runs_the_same_gemms_in_more_kernels():
    table = hotkernels.table_from_trace(H200_CELL / "torch-eager" / "trace.json")
    device = hotkernels.rows_of(table, "device")
    assert sum(r["count_per_step"] for r in device if r["name"].startswith(GEMM)) == 4
    assert sum(r["count_per_step"] for r in device if r["name"].startswith(ATTENTION)) == 1
    assert table["kernels_per_step"] == 14
