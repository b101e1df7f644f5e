"""Precision: one switch for the arithmetic of every framework (`--precision`).

The frameworks do not agree on what float32 means on a GPU: on Ampere and later, JAX's default
matmul precision and TensorFlow's default both use TF32 tensor cores for float32 matmuls, while
torch keeps float32 matmuls in full precision but lets cuDNN convolutions use TF32. A cell
therefore names its precision, each backend sets its framework's switches to it
(`apply_precision` in lab/compile/<family>.py) and reads back what the framework reports, and
the precision is part of the cell's name, its stored fields, its tolerances and its verdicts.

Knows no framework: names, storage dtypes and tolerances only (docs/precision.md has the table
of what each precision sets in torch, JAX and TensorFlow).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Precision(StrEnum):
    FP32 = "fp32"  # strict float32: no TF32 anywhere
    TF32 = "tf32"  # float32 storage; float32 matmuls and convolutions may use TF32 tensor cores
    BF16 = "bf16"  # weights and inputs cast to bfloat16
    FP16 = "fp16"  # weights and inputs cast to float16
    AMP_BF16 = "amp-bf16"  # float32 weights, matmuls and convolutions computed in bfloat16
    AMP_FP16 = "amp-fp16"  # float32 weights, matmuls and convolutions computed in float16


@dataclass(frozen=True)
class PrecisionPolicy:
    storage_dtype: str  # dtype of weights and inputs, as the workload builders take it
    compute_dtype: str  # dtype the matmuls and convolutions run in
    autocast: bool  # mixed precision: float32 weights, low-precision compute, float32 loss
    tf32: bool  # whether float32 matmuls and convolutions may use TF32 (Ampere and later)
    # (rtol, atol) for a compiled answer against its own framework's eager answer. TF32 keeps
    # fp16's 10-bit mantissa, so it gets fp16's tolerance; mixed precision gets its compute
    # dtype's. An answer outside them may still pass the float64 RMSE rule (lab.cell.accuracy).
    tolerance: tuple[float, float]


POLICIES: dict[Precision, PrecisionPolicy] = {
    Precision.FP32: PrecisionPolicy("float32", "float32", False, False, (1e-4, 1e-4)),
    Precision.TF32: PrecisionPolicy("float32", "tfloat32", False, True, (1e-3, 1e-3)),
    Precision.BF16: PrecisionPolicy("bfloat16", "bfloat16", False, False, (1.6e-2, 1e-2)),
    Precision.FP16: PrecisionPolicy("float16", "float16", False, False, (1e-3, 1e-3)),
    Precision.AMP_BF16: PrecisionPolicy("float32", "bfloat16", True, False, (1.6e-2, 1e-2)),
    Precision.AMP_FP16: PrecisionPolicy("float32", "float16", True, False, (1e-3, 1e-3)),
}

# `--dtype` (and the `dtype` of runs and claims stored before precisions existed) names a
# storage dtype; each maps to the precision that stores and computes in it, strictly
DTYPE_PRECISION = {"float32": Precision.FP32, "bfloat16": Precision.BF16,
                   "float16": Precision.FP16}

# what a cell runs in when no precision is asked for: strict float32 on the CPU (what the
# CPU computes anyway); bfloat16 mixed precision on CUDA, what PyTorch's compile dashboard
# trains with and what GPU users run
DEVICE_DEFAULT = {"cpu": Precision.FP32, "cuda": Precision.AMP_BF16}

NAMES = tuple(p.value for p in Precision)


def resolve(name: str) -> Precision:
    """A precision by its name, or by a storage dtype's name (`float32` -> `fp32`);
    ValueError listing the valid names otherwise."""
    if name in DTYPE_PRECISION:
        return DTYPE_PRECISION[name]
    try:
        return Precision(name)
    except ValueError:
        raise ValueError(f"unknown precision {name!r}; valid: {', '.join(NAMES)} (or a dtype: "
                         f"{', '.join(DTYPE_PRECISION)})") from None


def policy(name: str) -> PrecisionPolicy:
    return POLICIES[resolve(name)]


def default_for(device: str) -> Precision:
    return DEVICE_DEFAULT.get(device, Precision.FP32)


def tolerance(name: str) -> tuple[float, float]:
    return policy(name).tolerance


def of_cell(fields: dict) -> str | None:
    """The precision of a stored cell's fields: its `precision`, or for a cell stored before
    precisions existed the precision of its `dtype`; None when it has neither."""
    if fields.get("precision"):
        return str(fields["precision"])
    dtype = fields.get("dtype")
    return DTYPE_PRECISION[dtype].value if dtype in DTYPE_PRECISION else None
