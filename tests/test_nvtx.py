"""lab.cell.nvtx: phase ranges never raise, and mirror into framework traces when asked."""

import subprocess
import sys

import pytest

from lab.cell import nvtx


def test_ranges_nest_and_reject_unknown_phases():
    ranges = nvtx.Ranges("mlp/torch-eager/infer")
    with ranges.phase("setup"):
        for i in range(3):
            with ranges.phase("sample", payload=i):
                pass
    with pytest.raises(ValueError, match="unknown phase 'bogus'"):
        with ranges.phase("bogus"):
            pass


def test_ranges_pop_when_the_body_raises():
    ranges = nvtx.Ranges("cell")
    with pytest.raises(RuntimeError):
        with ranges.phase("sample", payload=0):
            raise RuntimeError("step failed")
    with ranges.phase("sample", payload=1):  # the stack is balanced again
        pass


def test_ranges_are_noops_without_the_nvtx_package(monkeypatch):
    monkeypatch.setattr(nvtx, "_nvtx", None)
    ranges = nvtx.Ranges("cell")
    with ranges.phase("warmup"):
        pass


def test_unknown_annotator_is_rejected():
    with pytest.raises(ValueError, match="unknown annotator 'mxnet'"):
        nvtx.Ranges("cell", annotate="mxnet")


TORCH_TRACE = """
import torch
from lab.cell import nvtx
ranges = nvtx.Ranges("cell", annotate="torch")
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for i in range(2):
        with ranges.phase("sample", payload=i):
            torch.ones(4) + 1
print([e.name for e in prof.events()].count("lab::sample"))
"""


@pytest.mark.slow
def test_torch_annotation_shows_in_the_profiler_trace():
    # Its own process: torch.profiler aborts (an LLVM option registered twice) in a process
    # that has imported TensorFlow, as other test modules do.
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, "-c", TORCH_TRACE], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "2"


def test_legacy_record_function_flag_means_torch():
    pytest.importorskip("torch")
    from torch.profiler import record_function

    assert nvtx.Ranges("cell", record_function=True)._annotation is record_function
