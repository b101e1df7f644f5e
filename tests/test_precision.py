"""Precision, one switch for every framework: names and aliases, the plan's default per
device, tolerances, claims and stored cells; and, per framework, what each precision really
sets, read back from torch, TensorFlow and JAX after `apply_precision`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_lab

from lab import compile as backends
from lab.cell import accuracy
from lab.cell.spec import CellSpec, benchmark_name
from lab.core import precision
from lab.core.errors import UsageError
from lab.judge import claims, verdict
from lab.running import loop as session
from lab.store import reader as results


def test_names_and_the_old_dtype_names_resolve():
    assert [p.value for p in precision.Precision] == list(precision.NAMES)
    assert precision.resolve("amp-bf16") is precision.Precision.AMP_BF16
    assert precision.resolve("float32") is precision.Precision.FP32
    assert precision.resolve("bfloat16") is precision.Precision.BF16
    assert precision.resolve("float16") is precision.Precision.FP16
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid: fp32, tf32"):
        precision.resolve("fp8")
    assert precision.policy("amp-bf16").storage_dtype == "float32"
    assert precision.policy("bf16").storage_dtype == "bfloat16"
    assert [p for p in precision.NAMES if precision.policy(p).tf32] == ["tf32"]


def test_tolerances_follow_the_arithmetic():
    assert accuracy.tolerance("fp32") == accuracy.tolerance("float32")
    assert accuracy.tolerance("amp-bf16") == accuracy.tolerance("bf16")
    assert accuracy.tolerance("fp32")[0] < accuracy.tolerance("tf32")[0] \
        < accuracy.tolerance("amp-bf16")[0]
    assert accuracy.tolerance("float64") == (1e-7, 1e-7)
    a = [[1.0] * 8]
    off = [[1.0 + 5e-3] * 8]  # a bfloat16-sized difference
    assert not accuracy.check(off, a, "fp32")["passed"]
    assert accuracy.check(off, a, "amp-bf16")["passed"]
    with pytest.raises(ValueError, match="no tolerance for 'int4'"):
        accuracy.tolerance("int4")


def _plan(**selection):
    cells, _ = session.plan(session.Selection(workloads=["mlp"], backends=["torch-eager"],
                                              device="cpu", threads=1, **selection))
    return cells[0].spec


def test_the_plan_resolves_precision_from_the_flag_the_alias_or_the_device():
    assert (_plan().precision, _plan().dtype) == ("fp32", "float32")  # the CPU's default
    assert (_plan(precision="amp-bf16").precision, _plan(precision="amp-bf16").dtype) == \
        ("amp-bf16", "float32")
    assert (_plan(dtype="bfloat16").precision, _plan(dtype="bfloat16").dtype) == \
        ("bf16", "bfloat16")
    assert _plan(precision="fp16", dtype="float16").precision == "fp16"
    with pytest.raises(UsageError, match="--precision bf16 and --dtype float32 disagree"):
        _plan(precision="bf16", dtype="float32")
    with pytest.raises(UsageError, match="--precision: unknown precision 'int8'"):
        _plan(precision="int8")
    assert precision.default_for("cuda") is precision.Precision.AMP_BF16


def test_the_precision_names_the_cell_and_an_old_spec_keeps_its_dtype():
    spec = _plan(precision="amp-fp16")
    assert benchmark_name(spec, "torch-eager") == \
        "mlp[torch-eager|infer|cpu|amp-fp16|batch=32]"
    old = json.loads(spec.to_json())
    del old["precision"]
    old["dtype"] = "bfloat16"
    assert CellSpec.from_json(json.dumps(old)).precision == "bf16"


def test_the_cli_refuses_an_unknown_precision_in_one_line():
    result = run_lab("run", "--workload", "mlp", "--precision", "fp8", "--device", "cpu")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--precision" in result.stderr


CLAIM = """\
[[claim]]
id = "c"
quote = "q"
metric = "speedup"
backend = "torch-compile"
workload = "mlp"
expect = "at_least"
value = 1.0
"""


def test_claims_state_a_precision_and_old_dtype_claims_map_to_one():
    assert claims.parse(CLAIM)[0].precision == "fp32"
    assert claims.parse(CLAIM + 'dtype = "bfloat16"\n')[0].precision == "bf16"
    assert claims.parse(CLAIM + 'precision = "amp-bf16"\n')[0].precision == "amp-bf16"
    default = claims.parse(CLAIM + 'precision = "default"\n')[0]
    assert verdict.claim_precision(default, "cpu") == "fp32"
    assert verdict.claim_precision(default, "cuda") == "amp-bf16"
    with pytest.raises(claims.ClaimError, match=r"<claims>:9: claim c: unknown precision"):
        claims.parse(CLAIM + 'precision = "fp64"\n')
    with pytest.raises(claims.ClaimError, match="not both"):
        claims.parse(CLAIM + 'precision = "fp32"\ndtype = "float32"\n')
    seed = {c.id: c.precision for c in claims.load(ROOT / "claims" / "seed.toml")}
    assert seed["compile-up-to-2x"] == "default" and seed["resnet50-training-parity"] == "fp32"


def test_verdicts_find_cells_by_precision_and_old_cells_by_their_dtype():
    old = {"name": "mlp[torch-compile|infer|cpu|float32|batch=32]", "extra_info": {
        "workload": "mlp", "backend": "torch-compile", "mode": "infer", "device": "cpu",
        "dtype": "float32", "status": "skipped"}}
    new = {"name": "mlp[torch-compile|infer|cpu|amp-bf16|batch=32]", "extra_info": {
        "workload": "mlp", "backend": "torch-compile", "mode": "infer", "device": "cpu",
        "precision": "amp-bf16", "dtype": "float32", "status": "skipped"}}
    doc = {"benchmarks": [], "lab": {"unmeasured": [old, new]}}
    found = verdict.index(doc, "cpu")
    assert set(found) == {("mlp", "torch-compile", "infer", "fp32"),
                          ("mlp", "torch-compile", "infer", "amp-bf16")}
    assert found[("mlp", "torch-compile", "infer", "amp-bf16")]["name"] == new["name"]


# ---------------------------------------------------------------- read back from each framework

# Runs in a fresh process per framework (frameworks keep global state, and this one may already
# hold torch): every precision in turn is applied, the seed's MLP built in its storage dtype and
# stepped once, and what the framework then reports is printed as JSON.
READ_BACK = """
import json, sys
from lab import compile as backends
from lab.core import precision
from lab import workloads
name = sys.argv[1]
info = backends.BACKENDS[name]
module = backends.load(info)
module.set_threads(1)
out = {}
for p in precision.NAMES:
    settings = module.apply_precision(p, "cpu")
    task = module.build_task(workloads.get("mlp"), {"batch": 4}, "infer", "cpu",
                             p, 0, name)
    side = module.SIDES[name](task, "infer", None)
    y = side.sync(side.step())
    out[p] = {"settings": settings, "model": side.diagnostics()["precision"],
              "output_dtype": str(getattr(y.dtype, "name", y.dtype)).removeprefix("torch.")}
print("READ-BACK " + json.dumps(out))
"""


def _read_back(backend: str) -> dict:
    info = backends.BACKENDS[backend]
    missing = backends.missing_packages(info)
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed")
    env = {**os.environ, **backends.load(info).process_env(1, "cpu"), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", READ_BACK, backend], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("READ-BACK "))
    print(f"{backend}: read-back of {len(precision.NAMES)} precisions in "
          f"{time.perf_counter() - t0:.1f} s")
    return json.loads(line.removeprefix("READ-BACK "))


def _computes_in(p: str) -> str:
    """The dtype a step's output comes out in: the storage dtype, or mixed precision's."""
    policy = precision.policy(p)
    return policy.compute_dtype if policy.autocast else policy.storage_dtype


@pytest.mark.slow
def test_torch_reads_back_every_precision():
    found = _read_back("torch-eager")
    for p in precision.NAMES:
        policy, got = precision.policy(p), found[p]
        settings = got["settings"]
        assert settings["precision"] == p
        assert settings["float32_matmul_precision"] == ("high" if policy.tf32 else "highest"), p
        assert settings["cuda_matmul_allow_tf32"] is policy.tf32, p
        assert settings["cudnn_allow_tf32"] is policy.tf32, p
        assert settings["autocast_dtype"] == (policy.compute_dtype if policy.autocast else None)
        assert got["model"]["parameter_dtypes"] == [policy.storage_dtype], p
        assert got["model"]["step_autocast_dtype"] == settings["autocast_dtype"], p
        assert got["output_dtype"] == _computes_in(p), p


@pytest.mark.slow
def test_tensorflow_reads_back_every_precision():
    found = _read_back("tf-eager")
    for p in precision.NAMES:
        policy, got = precision.policy(p), found[p]
        mixed = f"mixed_{policy.compute_dtype}"
        assert got["settings"]["tensor_float_32_execution"] is policy.tf32, p
        assert got["settings"]["keras_global_policy"] == (mixed if policy.autocast
                                                          else "float32"), p
        # every layer of the built model: the mixed policy, or the storage dtype's
        assert got["model"]["layer_policies"] == [mixed if policy.autocast
                                                  else policy.storage_dtype], p
        assert got["model"]["variable_dtypes"] == [policy.storage_dtype], p
        assert got["output_dtype"] == _computes_in(p), p


@pytest.mark.slow
def test_jax_reads_back_every_precision():
    found = _read_back("jax-eager")
    for p in precision.NAMES:
        policy, got = precision.policy(p), found[p]
        assert got["settings"]["default_matmul_precision"] == \
            ("tensorfloat32" if policy.tf32 else "highest"), p
        assert got["settings"]["mixed_compute_dtype"] == \
            (policy.compute_dtype if policy.autocast else None), p
        assert got["model"]["parameter_dtypes"] == [policy.storage_dtype], p
        # the dtypes the traced step's matmuls really take
        assert got["model"]["matmul_operand_dtypes"] == [_computes_in(p)], p
        assert got["output_dtype"] == _computes_in(p), p


@pytest.mark.long  # a compiled cell through the CLI; the read-back has its fast tests
@pytest.mark.slow
def test_lab_run_in_amp_bf16_stores_the_precision_and_what_torch_read_back(tmp_path):
    result = run_lab("run", "--workload", "mlp", "--backend", "torch-eager,torch-compile",
                     "--precision", "amp-bf16", "--mode", "infer", "--device", "cpu",
                     "--repeats", "3", "--threads", "1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "precision amp-bf16" in result.stdout  # the table's title
    doc = results.load(next(tmp_path.glob("*/*/results.json")))
    cells = results.cells_by_name(doc)
    assert set(cells) == {"mlp[torch-eager|infer|cpu|amp-bf16|batch=32]",
                          "mlp[torch-compile|infer|cpu|amp-bf16|batch=32]"}
    for cell in cells.values():
        assert cell["status"] == "ok", cell.get("reason")
        assert (cell["precision"], cell["dtype"]) == ("amp-bf16", "float32")
        settings = cell["precision_settings"]
        assert settings["autocast_dtype"] == "bfloat16"
        assert settings["float32_matmul_precision"] == "highest"
        assert settings["cuda_matmul_allow_tf32"] is False
        assert cell["diagnostics"]["precision"]["step_autocast_dtype"] == "bfloat16"
    compiled = cells["mlp[torch-compile|infer|cpu|amp-bf16|batch=32]"]
    assert compiled["accuracy"]["passed"] and compiled["speedup"] > 0
    # judged at bfloat16's tolerance, not float32's
    assert compiled["accuracy"].get("rtol", accuracy.tolerance("amp-bf16")[0]) == \
        accuracy.tolerance("amp-bf16")[0]
