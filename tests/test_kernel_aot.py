"""The ahead-of-time compile check (lab/kernels/aot.py): its pieces on fake inputs, then every
kernel module compiled for Hopper (sm_90) on this CPU, in a subprocess with the interpreter
off, within the compile budget and without spills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest

from lab.kernels import aot

pytest.importorskip("triton", reason="the compile check needs Triton")

import triton.language as tl  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402


def _probe(x_ptr, y_ptr, n, stride, scale, BLOCK: tl.constexpr, FLAG: tl.constexpr):
    pass


def _helper(x):
    pass


# Built directly, not with @triton.jit: under TRITON_INTERPRET=1 (the test default) the
# decorator returns an interpreted function, which the compile check cannot compile.
PROBE = JITFunction(_probe)


def test_cases_build_the_signature_triton_would_specialise():
    (case,) = aot.cases(PROBE, "bfloat16", {"x_ptr": "*bf16", "y_ptr": "*fp32", "stride": 1,
                                            "scale": 0.5}, {"BLOCK": 64, "FLAG": True},
                        variant="small", num_warps=8, num_stages=2)
    assert case.signature == {"x_ptr": "*bf16", "y_ptr": "*fp32", "n": "i32",
                              "stride": "constexpr", "scale": "fp32", "BLOCK": "constexpr",
                              "FLAG": "constexpr"}
    # an int equal to 1 is compiled in, as Triton does at run time; n defaults to a multiple
    # of 16 and pointers are aligned
    assert case.constexprs == {"stride": 1, "BLOCK": 64, "FLAG": True}
    assert set(case.divisible_by_16) == {"x_ptr", "y_ptr", "n"}
    assert (case.group, case.num_warps, case.num_stages) == ("bfloat16", 8, 2)
    assert case.label == "bfloat16 small w8 s2"


def test_cases_one_per_config():
    import triton

    configs = [triton.Config({"BLOCK": 32}, num_warps=4, num_stages=3),
               triton.Config({"BLOCK": 128}, num_warps=8, num_stages=4)]
    out = aot.cases(PROBE, "float32", {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": 1000,
                                       "scale": 1.0}, {"FLAG": False}, configs=configs)
    assert [(c.constexprs["BLOCK"], c.num_warps, c.num_stages) for c in out] == \
        [(32, 4, 3), (128, 8, 4)]
    assert "n" not in out[0].divisible_by_16  # 1000 is not a multiple of 16


@pytest.mark.parametrize("args, constexprs, message", [
    ({"x_ptr": "*fp32"}, {"BLOCK": 1, "FLAG": 1}, "pointer y_ptr needs a dtype"),
    ({"x_ptr": "*fp32", "y_ptr": "*fp32", "z": 3}, {"BLOCK": 1, "FLAG": 1}, "no argument"),
    ({"x_ptr": "*fp32", "y_ptr": "*fp32"}, {"BLOCK": 1}, "constexpr FLAG has no value"),
])
def test_cases_reject_incomplete_declarations(args, constexprs, message):
    with pytest.raises(ValueError, match=message):
        aot.cases(PROBE, "float32", args, constexprs)


def test_pointer_types():
    import torch

    assert aot.pointer(torch.bfloat16) == "*bf16"
    assert aot.pointer(torch.int64) == "*i64"
    with pytest.raises(ValueError, match="complex64"):
        aot.pointer(torch.complex64)


# What ptxas -v printed for one of the lab's kernels on sm_90 (TRITON_DUMP_PTXAS_LOG=1).
PTXAS_LOG = """ptxas-blackwell info    : 0 bytes gmem
ptxas-blackwell info    : Compiling entry function '_attention_fwd_kernel' for 'sm_90a'
ptxas-blackwell info    : Function properties for _attention_fwd_kernel
    520 bytes stack frame, 840 bytes spill stores, 880 bytes spill loads
ptxas-blackwell info    : Used 255 registers, used 1 barriers, 520 bytes cumulative stack size
"""


def test_parse_ptxas_report():
    assert aot.parse_ptxas_report(PTXAS_LOG) == {
        "registers": 255, "stack_bytes": 520, "spill_store_bytes": 840,
        "spill_load_bytes": 880}
    with pytest.raises(ValueError, match="no resource report"):
        aot.parse_ptxas_report("ptxas fatal: something else")


def _result(**kw):
    base = dict(module="m", kernel="k", group="g", label="l", num_warps=4, num_stages=3,
                compile_seconds=1.0, registers=100, spill_store_bytes=0, spill_load_bytes=0,
                stack_bytes=0, shared_bytes=1024)
    return aot.CompileResult(**(base | kw))


def test_problems():
    assert _result().problems(budget_s=2) == []
    assert "spills 8 B stored" in _result(spill_store_bytes=8).problems()[0]
    assert "budget 2 s" in _result(compile_seconds=3.0).problems(budget_s=2)[0]
    assert "shared memory" in _result(shared_bytes=300_000).problems()[0]
    assert _result(error="boom").problems() == ["did not compile: boom"]


def test_entry_kernels_and_declarations():
    # a fake kernel module: two entry kernels, a device helper, one declared
    module = types.ModuleType("lab.kernels.fake")
    _probe.__module__ = _helper.__module__ = module.__name__
    try:
        module._a_kernel = JITFunction(_probe)
        module._b_kernel = JITFunction(_probe)
        module.helper = JITFunction(_helper)
        assert aot.entry_kernels(module) == ["_a_kernel", "_b_kernel"]
        assert aot.declared_cases(module) == []
        module.compile_cases = lambda: aot.cases(
            module._a_kernel, "f", {"x_ptr": "*fp32", "y_ptr": "*fp32"}, {"BLOCK": 1, "FLAG": 1})
        assert [c.kernel for c in aot.declared_cases(module)] == ["_probe"]
    finally:
        _probe.__module__ = _helper.__module__ = __name__


def _run_aot(*args: str, timeout: float) -> subprocess.CompletedProcess:
    # TRITON_INTERPRET=0: the kernels must be defined as GPU kernels in the child
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    return subprocess.run([sys.executable, "-m", "lab.kernels.aot", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def test_cli_rejects_unknown_module():
    result = _run_aot("--only", "attention,nope", timeout=120)
    assert result.returncode == 2
    assert "unknown kernel module(s) nope" in result.stderr


# Two modules' compiles in `make test` (the quickest: a row reduction and an elementwise
# kernel); every module's in `make test-long` (attention's and matmul's autotune sets take
# minutes on 2 cores).
QUICK_AOT = {"softmax", "swiglu"}


@pytest.mark.slow
@pytest.mark.parametrize("module", [m if m in QUICK_AOT else pytest.param(m, marks=pytest.mark.long)
                                    for m in aot.kernel_modules()])
def test_compiles_for_hopper(module, tmp_path):
    # Every declared case of the module, cold cache, 2 compile processes: no error, no spill,
    # shared memory within sm_90's, each compile within the budget; and no entry kernel of the
    # module left undeclared.
    out = tmp_path / "aot.json"
    result = _run_aot("--only", module, "--out", str(out), timeout=900)
    record = json.loads(out.read_text())
    assert record["cases"], f"{module} declares no compile cases (compile_cases())"
    assert not record["uncovered_kernels"], f"undeclared: {record['uncovered_kernels']}"
    failed = [f"{c['kernel']} {c['label']}: {'; '.join(aot.CompileResult(**c).problems())}"
              for c in record["cases"] if aot.CompileResult(**c).problems()]
    assert not failed, "\n".join(failed)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
