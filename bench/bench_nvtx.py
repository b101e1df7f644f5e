"""What the lab's NVTX phase ranges cost when no profiler is attached.

    pytest bench/bench_nvtx.py --benchmark-autosave

Each benchmark times a loop of LOOP iterations: empty, with the lab's `sample` range (the
range every measured step runs in, payload = step index), and with the raw `nvtx` package
range for comparison. The per-range cost, (ranged loop - empty loop) / LOOP, goes into the
ranged benchmarks' `extra_info["range_cost_ns"]` (from pytest-benchmark's medians), so a saved
run shows it beside the timings. `nvtx_enabled` records whether a tool was attached.
"""

from __future__ import annotations

import pytest

from lab.cell.nvtx import Ranges

nvtx = pytest.importorskip("nvtx")

LOOP = 10_000
RANGES = Ranges("mlp/torch-eager/infer")  # built once per cell, outside any timed region
DOMAIN = nvtx.get_domain("lab")
_medians_s: dict[str, float] = {}


def _empty():
    for _ in range(LOOP):
        pass


def _lab_ranges():
    phase = RANGES.phase
    for i in range(LOOP):
        with phase("sample", payload=i):
            pass


def _raw_nvtx():
    attrs = DOMAIN.get_event_attributes(message="sample")
    for _ in range(LOOP):
        DOMAIN.push_range(attrs)
        DOMAIN.pop_range()


def _record(benchmark, name: str) -> None:
    _medians_s[name] = benchmark.stats.stats.median
    benchmark.extra_info.update(loop=LOOP, nvtx_enabled=bool(nvtx.enabled()))
    if name != "empty" and "empty" in _medians_s:
        cost_ns = (_medians_s[name] - _medians_s["empty"]) / LOOP * 1e9
        benchmark.extra_info["range_cost_ns"] = round(cost_ns, 1)


@pytest.mark.parametrize("name, loop", [("empty", _empty), ("lab_ranges", _lab_ranges),
                                        ("raw_nvtx", _raw_nvtx)])
def test_nvtx_range_cost(benchmark, name, loop):
    benchmark.group = "nvtx range cost, no profiler attached"
    benchmark.pedantic(loop, rounds=30, warmup_rounds=2)
    _record(benchmark, name)
