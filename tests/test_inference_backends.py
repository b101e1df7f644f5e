"""Inference runtimes (TorchScript, torch.export + AOTInductor, ONNX Runtime from torch and
from Keras, LiteRT, TensorRT): each converted model agrees with its framework's eager model on
the timed inputs, conversion is recorded as a phase of its own, a model that does not convert
ends `convert_error` with the converter's message, and train cells and missing hardware are
`skipped` with a reason.

The backend modules are driven directly (build_task + SIDES), as the cell drives them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from numerics import assert_close_scaled, eps

from lab import workloads
from lab.cell import accuracy
from lab.compile import BACKENDS
from lab.compile.protocol import BackendModule, Side
from lab.compile.runtimes import conversion
from lab.compile.runtimes.torchscript import TRACE_WARNED
from lab.core.status import CellFailure, Status

pytest.importorskip("torch")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
DATA_DEPENDENT = f"{ROOT / 'examples' / 'data_dependent.py'}:make_model"
SMALL = {"mlp": {"batch": 4},
         "transformer": {"batch": 2, "seq": 16, "d_model": 32, "heads": 4},
         "resnet50": {"batch": 1, "image_size": 32}}
RUNTIMES = ("torchscript", "torch-export", "onnxruntime", "onnxruntime-tf", "litert", "tensorrt")


def _installed(name: str) -> bool:
    from lab.compile import missing_packages

    return not missing_packages(BACKENDS[name])


def _needs(name: str):
    return pytest.mark.skipif(not _installed(name), reason=f"{name}'s packages not installed")


def _module(name: str):
    from lab.compile import load

    return load(BACKENDS[name])


def _sides(name: str, workload: str, option: str | None = None, shape: dict | None = None):
    """(candidate, baseline, task) as the cell builds them."""
    info, module = BACKENDS[name], _module(name)
    wl = workloads.get(workload)
    task = module.build_task(wl, shape if shape is not None else SMALL.get(workload, {}),
                             "infer", "cpu", "float32", 0, name)
    return (module.SIDES[name](task, "infer", option),
            module.SIDES[info.baseline](task, "infer", None), task)


def _converted_matches_eager(name: str, workload: str, option: str | None = None) -> dict:
    candidate, baseline, _ = _sides(name, workload, option)
    assert isinstance(candidate, Side)
    candidate.sync(candidate.step())  # the first call converts
    verdict = accuracy.check(candidate.outputs(), baseline.outputs(), "float32",
                             candidate.reference_fp64)
    assert verdict["passed"], accuracy.describe_failure(verdict)
    record = candidate.diagnostics()["conversion"]
    assert record["convert_s"] > 0
    assert record["artifact_bytes"] > 0
    return candidate.diagnostics()


# ---------------------------------------------------------------- the interface


@pytest.mark.parametrize("name", RUNTIMES)
def test_every_runtime_is_registered_with_its_eager_baseline_and_the_full_interface(name):
    info = BACKENDS[name]
    assert info.baseline in ("torch-eager", "tf-eager")
    module = _module(name)
    assert isinstance(module, BackendModule)  # the cell loads it through this check
    assert set(module.SIDES) == {name, info.baseline}


@pytest.mark.parametrize("name", RUNTIMES)
def test_train_cells_are_skipped_as_inference_runtimes(name):
    module = _module(name)
    wl = workloads.get("mlp")
    with pytest.raises(CellFailure) as ended:
        module.build_task(wl, SMALL["mlp"], "train", "cpu", "float32", 0, name)
    assert ended.value.status is Status.SKIPPED
    assert ended.value.reason == conversion.INFERENCE_ONLY


def test_tensorrt_on_the_cpu_is_skipped_naming_what_it_needs():
    support = _module("tensorrt").support("cpu")
    assert not support.ok
    assert support.reason.startswith("needs CUDA and torch-tensorrt")


def test_litert_refuses_cuda_with_a_reason():
    support = _module("litert").support("cuda")
    assert not support.ok and "CPU" in support.reason


@_needs("onnxruntime")
def test_onnxruntime_tensorrt_provider_on_the_cpu_is_skipped():
    with pytest.raises(CellFailure) as ended:
        _sides("onnxruntime", "mlp", option="tensorrt")
    assert ended.value.status is Status.SKIPPED
    assert "needs CUDA" in ended.value.reason


def test_keras_runtimes_skip_a_workload_without_a_tensorflow_version():
    module = _module("litert")
    wl = workloads.get(DATA_DEPENDENT)
    with pytest.raises(CellFailure) as ended:
        module.build_task(wl, {}, "infer", "cpu", "float32", 0, "litert")
    assert ended.value.status is Status.SKIPPED
    assert "no TensorFlow version" in ended.value.reason


# ---------------------------------------------------------------- conversion records


def test_first_line_strips_colour_and_keeps_the_cause():
    try:
        try:
            raise ValueError("Could not guard on data-dependent expression\nmore detail")
        except ValueError as inner:
            raise RuntimeError("\x1b[96mstep 1/3\x1b[0m failed\nnext steps") from inner
    except RuntimeError as outer:
        line = conversion.first_line(outer)
    assert line == ("RuntimeError: step 1/3 failed (cause: ValueError: Could not guard on "
                    "data-dependent expression)")


def test_timed_step_turns_a_converter_exception_into_the_given_status():
    with pytest.raises(CellFailure) as ended:
        with conversion.timed_step("my converter"):
            raise KeyError("layer_7")
    assert ended.value.status is Status.CONVERT_ERROR
    assert ended.value.reason == "my converter: KeyError: 'layer_7'"
    with pytest.raises(CellFailure) as ended:
        with conversion.timed_step("a compiler", Status.COMPILE_ERROR):
            raise OSError("g++ failed")
    assert ended.value.status is Status.COMPILE_ERROR


def test_timed_step_keeps_warnings_once_each():
    import warnings

    with conversion.timed_step("x") as timed:
        for _ in range(3):
            warnings.warn("trace might be wrong\nsecond line", UserWarning, stacklevel=1)
    assert timed.warnings == ["UserWarning: trace might be wrong"]
    assert timed.seconds >= 0


def test_artifact_size_counts_every_file_in_a_folder(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 23)
    assert conversion.artifact_size(str(tmp_path)) == 123
    assert conversion.artifact_size(str(tmp_path / "a.bin")) == 100


# ---------------------------------------------------------------- converted == eager


def test_torchscript_traces_the_mlp_and_matches_eager():
    diagnostics = _converted_matches_eager("torchscript", "mlp")
    assert diagnostics["method_used"] == "trace"
    assert diagnostics["fallback_reason"] is None
    assert diagnostics["deprecated"]  # torch 2.13 says so, and the record keeps it


def test_torchscript_keeps_a_warned_trace_that_script_cannot_replace():
    # the block's shape arithmetic warns under trace; script rejects its `ops` namespace
    diagnostics = _converted_matches_eager("torchscript", "transformer")
    assert diagnostics["method_used"] == "trace"
    assert diagnostics["fallback_reason"].startswith(TRACE_WARNED)
    assert "script failed, trace kept: torch.jit.script: RuntimeError" in \
        diagnostics["fallback_reason"]


@_needs("onnxruntime")
@pytest.mark.parametrize("workload", ["mlp", "transformer"])
def test_onnxruntime_from_torch_matches_eager(workload):
    diagnostics = _converted_matches_eager("onnxruntime", workload)
    assert diagnostics["providers"] == ["CPUExecutionProvider"]
    assert diagnostics["conversion"]["artifact_format"] == ".onnx"


@_needs("onnxruntime")
def test_onnxruntime_from_torch_matches_eager_on_resnet50():
    _converted_matches_eager("onnxruntime", "resnet50")


@_needs("onnxruntime-tf")
@pytest.mark.parametrize("workload", ["mlp", "transformer"])
def test_onnxruntime_from_keras_matches_eager(workload):
    diagnostics = _converted_matches_eager("onnxruntime-tf", workload)
    assert diagnostics["conversion"]["converter"].startswith("tf2onnx")


@_needs("litert")
@pytest.mark.parametrize("workload", ["mlp", "transformer"])
def test_litert_float32_matches_eager(workload):
    diagnostics = _converted_matches_eager("litert", workload)
    assert diagnostics["precision"] == "float32"
    # float32 rounding only: RMSE relative to the output's RMS within the chain's reduction
    # lengths x eps (tests/numerics.py), the SMALL shapes
    chain = {"mlp": 784 + 128, "transformer": 9 * 32 + 32 // 4 + 2 * 16}[workload]
    assert diagnostics["quantization_error"]["relative_rmse"] < chain * eps("float32")


@_needs("litert")
def test_litert_int8_is_quantized_and_within_its_stated_tolerance():
    from lab.compile.runtimes.litert import INT8_TOLERANCE

    int8, baseline, _ = _sides("litert", "mlp", option="int8")
    float32, _, _ = _sides("litert", "mlp", option="float32")
    got, eager = int8.outputs(), baseline.outputs()
    # quantization happened: the answer moved by more than float32 rounding ...
    assert not accuracy.check(got, eager, "float32")["passed"]
    # ... and by less than the stated int8 tolerance
    for g, e in zip(got, eager, strict=True):
        np.testing.assert_allclose(g, e, rtol=INT8_TOLERANCE["rtol"], atol=INT8_TOLERANCE["atol"])
    assert int8.accuracy_tolerance["why"].startswith("dynamic-range int8")
    assert float32.accuracy_tolerance is None
    float32.step()
    # int8 weights: the artifact shrinks to about a quarter of the float32 one
    ratio = int8.conversion.artifact_bytes / float32.conversion.artifact_bytes
    assert 0.2 < ratio < 0.35, ratio


@pytest.mark.slow
def test_torch_export_aotinductor_matches_eager():
    """One small model: AOTInductor compiles and links C++ (~30 s on 2 cores)."""
    module = _module("torch-export")
    support = module.support("cpu")
    if not support.ok:
        pytest.skip(support.reason)
    diagnostics = _converted_matches_eager("torch-export", "mlp")
    assert diagnostics["conversion"]["artifact_format"].startswith(".pt2")
    assert diagnostics["aoti_compile_s"] > diagnostics["export_s"]


# ---------------------------------------------------------------- a model that does not convert


def test_data_dependent_control_flow_is_a_convert_error_for_torch_export():
    candidate, baseline, _ = _sides("torch-export", DATA_DEPENDENT)
    baseline.step()  # eager runs it
    with pytest.raises(CellFailure) as ended:
        candidate.step()
    assert ended.value.status is Status.CONVERT_ERROR
    assert ended.value.reason.startswith("torch.export.export: ")
    assert "data-dependent" in ended.value.reason
    assert "\n" not in ended.value.reason


@_needs("onnxruntime")
def test_data_dependent_control_flow_is_a_convert_error_for_onnx_with_the_cause():
    candidate, _, _ = _sides("onnxruntime", DATA_DEPENDENT)
    with pytest.raises(CellFailure) as ended:
        candidate.step()
    assert ended.value.status is Status.CONVERT_ERROR
    assert "data-dependent" in ended.value.reason  # export's reason, not only the wrapper's
    assert "\x1b" not in ended.value.reason


def test_torchscript_scripts_what_trace_would_get_wrong():
    import torch

    candidate, _, task = _sides("torchscript", DATA_DEPENDENT)
    candidate.step()
    diagnostics = candidate.diagnostics()
    assert diagnostics["method_used"] == "script"
    assert diagnostics["fallback_reason"] == TRACE_WARNED
    assert any(w.startswith("TracerWarning") for w in diagnostics["conversion"]["warnings"])
    # the scripted module keeps both branches: scaled far enough, the input's sign picks the
    # branch (mean(h) = t * mean(W x) + mean(b)), and script follows eager on both sides
    x, model = task.inputs[0], task.model
    with torch.no_grad():
        branch_means = [model.fc(t * x).mean().item() for t in (100.0, -100.0)]
        assert branch_means[0] * branch_means[1] < 0  # eager took both branches
        for t in (100.0, -100.0):
            # one 64-wide Linear, then relu or tanh
            assert_close_scaled(candidate.script_module(t * x), model(t * x),
                                dtype="float32", reduction_len=64, what=f"scripted, x * {t}")


def test_torchscript_script_option_never_traces():
    candidate, baseline, _ = _sides("torchscript", "mlp", option="script")
    candidate.step()
    diagnostics = candidate.diagnostics()
    assert diagnostics["method_used"] == "script"
    assert diagnostics["conversion"]["converter"].startswith("torch.jit.script")
    # the MLP: sums over 784, then 128
    assert_close_scaled(candidate.outputs()[0], baseline.outputs()[0], dtype="float32",
                        reduction_len=784 + 128, what="scripted MLP")


@pytest.mark.skipif(importlib.util.find_spec("torch_tensorrt") is not None,
                    reason="torch-tensorrt installed: the CPU skip is not what happens")
def test_tensorrt_reason_names_the_missing_package():
    assert "torch_tensorrt not installed" in _module("tensorrt").support("cuda").reason


@pytest.mark.skipif(importlib.util.find_spec("lab.core.precision") is None,
                    reason="precisions not in this tree")
def test_mixed_precision_is_skipped_for_converted_models():
    with pytest.raises(CellFailure) as ended:
        _module("torchscript").apply_precision("amp-bf16", "cpu")
    assert ended.value.status is Status.SKIPPED
    assert "autocast" in ended.value.reason
