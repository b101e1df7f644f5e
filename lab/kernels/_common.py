"""What every kernel file shares: input checks, output allocation, launch sizes, tolerances.

Checks raise `TypeError` for a wrong type or dtype and `ValueError` for a wrong shape, device or
layout, in one line that names the argument, so a bad call fails before a kernel is launched.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
import triton
import triton.language as tl

# Read once at import, like `triton.jit` does: a kernel module imported without the variable
# set compiles for the GPU even if the variable is set later.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# One tolerance table for every kernel test, keyed by the dtype of the inputs and outputs.
# The kernels compute in fp32 and round once on store; the tests run the reference in float64
# on the same values and round it to the dtype. A correct kernel then differs by one rounding
# of the output (fp16 keeps 11 significant bits, eps 9.8e-4; bf16 8 bits, eps 7.8e-3; the Triton
# interpreter truncates fp32 to bf16 where the GPU rounds to nearest, up to one unit more), or in
# fp32 by the error of its fp32 sums: a weight gradient summed over 1823 rows of values near 1
# is off by up to ~3e-5 absolute (an fp32 PyTorch reference is off by ~1.3e-4, so the reference
# is float64). atol is per unit of the expected tensor's largest magnitude where that exceeds 1
# (the tests' assert_close scales it): a sum's rounding follows the size of what it sums.
TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 1.6e-2, "rtol": 1.6e-2},
}


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """`atol`/`rtol` for `torch.testing.assert_close` at this dtype."""
    return TOLERANCES[dtype]


# ---------------------------------------------------------------------------------- checks


def check_tensor(name: str, t, *, ndim: int | None = None, min_ndim: int | None = None,
                 dtypes: tuple = FLOAT_DTYPES, contiguous: bool = True) -> None:
    """Raise if `t` is not a tensor the kernels can read: type, dtype, rank, device, layout."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} has dtype {str(t.dtype).replace('torch.', '')}; "
                        f"supported: {allowed}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if min_ndim is not None and t.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), "
                         f"got shape {tuple(t.shape)}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (strides {t.stride()} for shape "
                         f"{tuple(t.shape)}); call .contiguous() first")
    check_device(name, t)


def check_device(name: str, t: torch.Tensor) -> None:
    # meta tensors only propagate shapes and never reach a kernel
    if t.device.type in ("cuda", "meta") or (t.device.type == "cpu" and INTERPRET):
        return
    raise ValueError(f"{name} is on {t.device}; the Triton kernels need a CUDA tensor "
                     f"(or CPU tensors with TRITON_INTERPRET=1 set before import)")


def check_same(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise unless `a` and `b` share device and dtype (a kernel reads both with one type)."""
    if a.dtype != b.dtype:
        raise TypeError(f"{name_b} has dtype {b.dtype}, {name_a} has {a.dtype}; they must match")
    if a.device != b.device:
        raise ValueError(f"{name_b} is on {b.device}, {name_a} on {a.device}; they must match")


def check_like(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, **kw) -> None:
    """`b` is a valid tensor (check_tensor's `kw`) with `a`'s device, dtype and shape: an
    output or gradient buffer that the kernel indexes with `a`'s strides."""
    check_tensor(name_b, b, **kw)
    check_same(name_a, a, name_b, b)
    if b.shape != a.shape:
        raise ValueError(f"{name_b} has shape {tuple(b.shape)}, {name_a} has {tuple(a.shape)}; "
                         f"they must match")


# ---------------------------------------------------------------------- output allocation

_POISON = {"on": False}


@contextlib.contextmanager
def poisoned_outputs():
    """Inside this block every buffer a kernel writes starts as NaN (floats) or the integer
    minimum, so an element the kernel never writes shows up in the result instead of passing
    because `torch.empty` happened to hold the right bytes."""
    before = _POISON["on"]
    _POISON["on"] = True
    try:
        yield
    finally:
        _POISON["on"] = before


def new_output(shape, *, dtype: torch.dtype, device) -> torch.Tensor:
    """`torch.empty` for a buffer the kernel fully overwrites (poisoned in tests, see above)."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if _POISON["on"]:
        out.fill_(float("nan") if out.is_floating_point() else torch.iinfo(dtype).min)
    return out


# ---------------------------------------------------------------------------- launch sizes


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def persistent_programs(device: torch.device, work_items: int) -> int:
    """How many programs a reduction over rows launches: one per SM on CUDA (each program keeps
    its partial sums in registers and writes them once), a handful under the interpreter (which
    runs programs one after another, so fewer and larger is faster)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return max(1, min(work_items, _sm_count(index)))
    return max(1, min(work_items, 4))


def row_tile(n_cols: int, *, max_block_cols: int, elements_per_program: int) -> tuple[int, int]:
    """(rows, cols) of the tile one program covers for a row-wise kernel. The column block is
    the row length rounded up to a power of two (capped); short rows are stacked so a program
    still moves `elements_per_program` elements rather than a few hundred bytes."""
    block_cols = min(triton.next_power_of_2(max(n_cols, 1)), max_block_cols)
    block_rows = max(1, elements_per_program // block_cols)
    return block_rows, block_cols


def num_warps_for(block_elements: int) -> int:
    """Warps for a tile of this many elements: about 8-16 fp32 values per thread."""
    if block_elements >= 16384:
        return 16
    if block_elements >= 4096:
        return 8
    return 4


# ------------------------------------------------------------------- shared device helpers


@triton.jit
def sigmoid(x):
    """1 / (1 + exp(-x)) without overflow: exp only ever sees -|x|."""
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# ------------------------------------------------------------ partial sums of a reduction
# A backward that reduces over rows (a weight or bias gradient) lets each program sum its own
# block of rows in registers and write one fp32 partial row; this adds the partial rows and
# rounds once to the parameter's dtype, in one small kernel (torch's `.sum(0).to(dtype)` would
# launch two and write an fp32 row in between).

PARTIAL_BLOCK_ROWS = 32
PARTIAL_BLOCK_COLS = 128


@triton.jit
def _sum_partial_rows_kernel(part_ptr, out_ptr, n_parts, n_cols, BLOCK_ROWS: tl.constexpr,
                             BLOCK_COLS: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    col_ok = cols < n_cols
    acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], tl.float32)
    for start in range(0, n_parts, BLOCK_ROWS):
        rows = start + tl.arange(0, BLOCK_ROWS)
        mask = (rows < n_parts)[:, None] & col_ok[None, :]
        acc += tl.load(part_ptr + rows.to(tl.int64)[:, None] * n_cols + cols[None, :],
                       mask=mask, other=0.0)
    tl.store(out_ptr + cols, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=col_ok)


def sum_partial_rows(partials: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(n_parts, n_cols) fp32 partial sums -> their column sums, (n_cols,) in `dtype`."""
    check_tensor("partials", partials, ndim=2, dtypes=(torch.float32,))
    n_parts, n_cols = partials.shape
    out = new_output((n_cols,), dtype=dtype, device=partials.device)
    if n_cols == 0:
        return out
    if n_parts == 0:
        return out.zero_()
    _sum_partial_rows_kernel[(triton.cdiv(n_cols, PARTIAL_BLOCK_COLS),)](
        partials, out, n_parts, n_cols, BLOCK_ROWS=PARTIAL_BLOCK_ROWS,
        BLOCK_COLS=PARTIAL_BLOCK_COLS, num_warps=4)
    return out
