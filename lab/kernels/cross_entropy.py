"""Cross-entropy over a large vocabulary: log-softmax, loss and gradient in one kernel.

Eager PyTorch writes log_softmax(logits) (a logits-sized tensor), reads it for the loss, and
in the backward writes the gradient of the log-softmax and then the gradient of the logits:
three logits-sized tensors beyond the logits. Here each row is streamed over the vocabulary in
chunks twice in the forward: once for the running max and sum of exponentials (online
softmax), once to write the gradient softmax(x) - onehot(target), already divided by the number
of counted rows. The gradient buffer is the only logits-sized tensor produced; the backward
scales it in place by the incoming gradient, and skips even that when the gradient is 1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (
    INTERPRET,
    check_device,
    check_tensor,
    new_output,
    num_warps_for,
    persistent_programs,
    row_tile,
)

REDUCTIONS = ("mean", "sum", "none")

# ------------------------------------------------------------------------------ reference


def reference(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100,
              reduction: str = "mean") -> torch.Tensor:
    """F.cross_entropy, in logits' dtype.

    Memory floor, logits n_rows x vocab of itemsize s: forward with gradient reads the logits
    (twice when a row does not fit on chip, the second read usually from L2) and writes the
    gradient once: 2 * n_rows * vocab * s (3 with the second read); forward alone reads once.
    Flops per logit: about 6 (max, subtract, exp, sum, then exp and scale for the gradient).
    """
    return torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore_index,
                                             reduction=reduction)


# --------------------------------------------------------------------------------- kernels

# Vocabulary chunk per step. A row is streamed in chunks, so any vocabulary size works; the
# interpreter's is small so the tests stream several chunks with small shapes. Rows shorter
# than a chunk are stacked so one program still covers ELEMENTS_PER_PROGRAM logits.
MAX_BLOCK_VOCAB = 1024 if INTERPRET else 16384
ELEMENTS_PER_PROGRAM = 16384
# At most this many rows stacked in a forward tile: each row carries its own running max, sum,
# target and scale, and compiled for sm_90 a 16 x 1024 tile on 16 warps spilled 1.1-1.7 KB
# (128 x 128: 3.3 KB); 8 rows sat at the 128-register cap, 4 take 48-102 registers.
MAX_STACKED_ROWS = 4


@triton.jit
def _cross_entropy_fwd_kernel(logits_ptr, target_ptr, loss_ptr, grad_ptr, grad_scale_ptr,
                              n_rows, n_cols, ignore_index, BLOCK_ROWS: tl.constexpr,
                              BLOCK_COLS: tl.constexpr, WRITE_GRAD: tl.constexpr):
    # Persistent: one program per SM walks the row tiles pid, pid + n_programs, ... With the
    # gradient, each row is read twice (max and sum, then the gradient). One row tile per SM in
    # flight keeps the rows being re-read within L2 (132 rows of 128256 bf16 logits are 34 MB;
    # an H200's L2 is 60 MB, an H100's 50 MB), so the second read rarely reaches HBM: the
    # kernel's HBM traffic is one read of the logits and one write of the gradient.
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_COLS)
    if WRITE_GRAD:
        grad_scale = tl.load(grad_scale_ptr)
    for tile in range(pid, tl.cdiv(n_rows, BLOCK_ROWS), n_programs):
        rows = tile * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_ok = rows < n_rows
        # int64: n_rows * vocab passes 2**31 for large batches
        row_start = rows.to(tl.int64) * n_cols
        target = tl.load(target_ptr + rows, mask=row_ok, other=ignore_index)
        counted = row_ok & (target != ignore_index)
        # Pass 1, online softmax per row: the running max m and the sum s of exp(x - m),
        # rescaled by one exp per row when a chunk raises m. One exp per logit.
        m = tl.full([BLOCK_ROWS], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK_ROWS], tl.float32)
        for start in range(0, n_cols, BLOCK_COLS):
            c = start + cols
            mask = row_ok[:, None] & (c[None, :] < n_cols)
            x = tl.load(logits_ptr + row_start[:, None] + c[None, :], mask=mask,
                        other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, axis=1))
            shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # no exp(-inf - -inf) = NaN
            s = s * tl.exp(m - shift) + tl.sum(tl.exp(x - shift[:, None]), axis=1)
            m = m_new
        # rows past the end saw only -inf: give them max 0 and sum 1 so they compute no NaN
        row_max = tl.where(row_ok, m, 0.0)
        # logsumexp = row_max + log_sum, kept apart: with logits near 1e4, rounding their sum
        # to fp32 would cost 0.004 absolute (0.4% of every probability); x - row_max is exact.
        log_sum = tl.log(tl.where(row_ok, s, 1.0))
        # The target's logit, one load per row. A target outside [0, vocab) that is not
        # ignore_index reads nothing (0): loss logsumexp(row), gradient softmax(row).
        in_vocab = counted & (target >= 0) & (target < n_cols)
        x_target = tl.load(logits_ptr + row_start + target, mask=in_vocab,
                           other=0.0).to(tl.float32)
        loss = tl.where(counted, (row_max - x_target) + log_sum, 0.0)
        tl.store(loss_ptr + rows, loss, mask=row_ok)
        if WRITE_GRAD:
            # d loss / d x = (softmax(x) - onehot(target)) * scale, scale = 1 / counted rows
            # for "mean", 1 otherwise; 0 for an ignored row.
            scale = tl.where(counted, grad_scale, 0.0)
            for start in range(0, n_cols, BLOCK_COLS):
                c = start + cols
                mask = row_ok[:, None] & (c[None, :] < n_cols)
                offs = row_start[:, None] + c[None, :]
                x = tl.load(logits_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                p = tl.exp((x - row_max[:, None]) - log_sum[:, None])
                g = (p - tl.where(c[None, :] == target[:, None], 1.0, 0.0)) * scale[:, None]
                tl.store(grad_ptr + offs, g.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _scale_grad_kernel(grad_ptr, scale_ptr, n_rows, n_cols, BLOCK_ROWS: tl.constexpr,
                       BLOCK_COLS: tl.constexpr, PER_ROW: tl.constexpr):
    # grad *= d(out)/d(loss), in place: a scalar, or one value per row for reduction="none".
    # The usual backward starts from exactly 1 and then nothing is read or written: a scalar 1
    # leaves every program with no tiles (one small load each), a tile whose per-row scales are
    # all 1 is skipped. Persistent (one program per SM), so skipping costs a handful of
    # programs, not one per tile; and the host never looks at the value (no sync).
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    n_col_blocks = tl.cdiv(n_cols, BLOCK_COLS)
    n_tiles = tl.cdiv(n_rows, BLOCK_ROWS) * n_col_blocks
    if not PER_ROW:
        n_tiles = tl.where(tl.load(scale_ptr).to(tl.float32) == 1.0, 0, n_tiles)
    for tile in range(pid, n_tiles, n_programs):
        rows = (tile // n_col_blocks) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cols = (tile % n_col_blocks) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        row_ok = rows < n_rows
        if PER_ROW:
            scale = tl.load(scale_ptr + rows, mask=row_ok, other=1.0).to(tl.float32)
        else:
            scale = tl.zeros([BLOCK_ROWS], tl.float32) + tl.load(scale_ptr).to(tl.float32)
        if tl.max(tl.abs(scale - 1.0), axis=0) != 0.0:
            mask = row_ok[:, None] & (cols < n_cols)[None, :]
            offs = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
            g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32) * scale[:, None]
            tl.store(grad_ptr + offs, g.to(grad_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------- launchers


def _check_inputs(logits, target, ignore_index, reduction) -> None:
    check_tensor("logits", logits, ndim=2)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"target has dtype {target.dtype}; class indices must be int64 or int32")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must have shape ({logits.shape[0]},) to match logits "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    if not target.is_contiguous():
        raise ValueError("target must be contiguous; call .contiguous() first")
    check_device("target", target)
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device}, logits on {logits.device}")
    if logits.shape[1] == 0 and logits.shape[0] > 0:
        raise ValueError("logits has 0 classes (shape (n_rows, 0))")
    if not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}; choose one of {REDUCTIONS}")


def cross_entropy_fwd(logits, target, ignore_index: int, reduction: str,
                      grad: torch.Tensor | None) -> torch.Tensor:
    """Return the loss (reduced as asked, logits' dtype); if `grad` (logits' shape and dtype)
    is given, also write d loss / d logits into it.

    A target outside [0, vocab) that is not `ignore_index` is not checked (that would cost a
    device sync): its row's loss is logsumexp(row) and its gradient softmax(row)."""
    _check_inputs(logits, target, ignore_index, reduction)
    if grad is not None:
        check_tensor("grad", grad)
        if grad.shape != logits.shape or grad.dtype != logits.dtype:
            raise ValueError(f"grad must match logits {tuple(logits.shape)} {logits.dtype}, got "
                             f"{tuple(grad.shape)} {grad.dtype}")
    n_rows, n_cols = logits.shape
    loss_rows = new_output((n_rows,), dtype=torch.float32, device=logits.device)
    # Counted rows as a device tensor: the kernel reads 1/count from memory, so no sync.
    n_counted = (target != ignore_index).sum().to(torch.float32)
    grad_scale = (1.0 / n_counted if reduction == "mean"
                  else torch.ones((), dtype=torch.float32, device=logits.device)).reshape(1)
    if n_rows:
        block_rows, block_cols = _fwd_tile(n_cols)
        n_programs = persistent_programs(logits.device, triton.cdiv(n_rows, block_rows))
        _cross_entropy_fwd_kernel[(n_programs,)](
            logits, target, loss_rows, grad if grad is not None else logits, grad_scale, n_rows,
            n_cols, ignore_index, BLOCK_ROWS=block_rows, BLOCK_COLS=block_cols,
            WRITE_GRAD=grad is not None, num_warps=num_warps_for(block_rows * block_cols))
    if reduction == "none":
        return loss_rows.to(logits.dtype)
    total = loss_rows.sum()
    return (total / n_counted if reduction == "mean" else total).to(logits.dtype)


def _fwd_tile(n_cols: int) -> tuple[int, int]:
    rows, cols = row_tile(n_cols, max_block_cols=MAX_BLOCK_VOCAB,
                          elements_per_program=ELEMENTS_PER_PROGRAM)
    return min(rows, MAX_STACKED_ROWS), cols


def _scale_grad_tile(n_rows: int, n_cols: int) -> tuple[int, int]:
    block_cols = min(triton.next_power_of_2(n_cols), 4096)
    return max(1, min(ELEMENTS_PER_PROGRAM // block_cols, triton.next_power_of_2(n_rows))), \
        block_cols


def scale_grad_(grad: torch.Tensor, scale: torch.Tensor) -> None:
    """grad (n_rows, vocab) *= scale in place; scale is a scalar or has one value per row."""
    check_tensor("grad", grad, ndim=2)
    check_tensor("scale", scale)
    if scale.numel() not in (1, grad.shape[0]):
        raise ValueError(f"scale has {scale.numel()} elements; expected 1 or {grad.shape[0]} "
                         f"(one per row of grad)")
    if grad.numel() == 0:
        return
    n_rows, n_cols = grad.shape
    block_rows, block_cols = _scale_grad_tile(n_rows, n_cols)
    n_tiles = triton.cdiv(n_rows, block_rows) * triton.cdiv(n_cols, block_cols)
    _scale_grad_kernel[(persistent_programs(grad.device, n_tiles),)](
        grad, scale, n_rows, n_cols, BLOCK_ROWS=block_rows, BLOCK_COLS=block_cols,
        PER_ROW=scale.numel() > 1, num_warps=num_warps_for(block_rows * block_cols))


# ----------------------------------------------------- torch.library ops and the autograd rule
# `custom_op` + `register_fake` lets torch.compile trace the op; `register_autograd` is the
# custom-op form of an autograd.Function. The forward returns the gradient it wrote as a second,
# non-differentiable output; the backward scales it in place by d(out)/d(loss) (a custom op
# that declares the mutation, so torch.compile keeps it in place) and returns it.


@torch.library.custom_op("lab::cross_entropy", mutates_args=())
def _cross_entropy_op(logits: torch.Tensor, target: torch.Tensor, ignore_index: int,
                      reduction: str, compute_grad: bool
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    if compute_grad:
        grad = new_output(logits.shape, dtype=logits.dtype, device=logits.device)
    else:
        grad = logits.new_empty((0,))
    loss = cross_entropy_fwd(logits, target, ignore_index, reduction,
                             grad if compute_grad else None)
    return loss, grad


@_cross_entropy_op.register_fake
def _(logits, target, ignore_index, reduction, compute_grad):
    _check_inputs(logits, target, ignore_index, reduction)
    loss_shape = (logits.shape[0],) if reduction == "none" else ()
    grad = torch.empty_like(logits) if compute_grad else logits.new_empty((0,))
    return logits.new_empty(loss_shape), grad


@torch.library.custom_op("lab::cross_entropy_scale_grad_", mutates_args=("grad",))
def _scale_grad_op(grad: torch.Tensor, scale: torch.Tensor) -> None:
    scale_grad_(grad, scale)


@_scale_grad_op.register_fake
def _(grad, scale):
    return None


def _setup_context(ctx, inputs, output):
    _logits, _target, _ignore_index, reduction, compute_grad = inputs
    _loss, grad = output
    ctx.mark_non_differentiable(grad)
    ctx.reduction = reduction
    ctx.compute_grad = compute_grad
    ctx.save_for_backward(grad)


def _backward(ctx, dloss, _dgrad):
    if not ctx.compute_grad:
        raise RuntimeError("lab::cross_entropy ran without compute_grad=True, so it kept no "
                           "gradient; call it with logits that require grad")
    (grad,) = ctx.saved_tensors
    # In place: the gradient stays the one logits-sized buffer. A second backward through the
    # same graph (retain_graph=True) is refused by autograd's version check on `grad`.
    _scale_grad_op(grad, dloss.contiguous())
    return grad, None, None, None, None


_cross_entropy_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------- public op


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100,
                  reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of `logits` against class indices `target`, as F.cross_entropy.

    logits: (n_rows, vocab) contiguous, fp32/fp16/bf16; target: (n_rows,) int64 or int32, a
    row whose target is `ignore_index` counts for nothing. reduction "mean" (over counted rows),
    "sum" or "none" (per row, shape (n_rows,)). Returns the loss in logits' dtype; when logits
    require grad, the forward also writes their gradient (one logits-sized buffer).
    """
    _check_inputs(logits, target, ignore_index, reduction)
    compute_grad = torch.is_grad_enabled() and logits.requires_grad
    return _cross_entropy_op(logits, target, ignore_index, reduction, compute_grad)[0]


def flops(shape, *, backward: bool = False) -> int:
    """shape = (n_rows, vocab). The gradient is computed in the forward (when the logits require
    grad); the backward's scaling is free when d(out)/d(loss) is 1, as in loss.backward()."""
    n_rows, vocab = shape
    return 0 if backward else 6 * n_rows * vocab


def bytes_moved(shape, dtype: torch.dtype, *, backward: bool = False,
                with_grad: bool = True) -> int:
    """Minimum bytes. Forward: logits read once, plus the gradient written once when
    `with_grad`; targets and per-row losses counted too. Backward: nothing when d(out)/d(loss)
    is 1 (otherwise the scaling reads and writes the gradient once more)."""
    n_rows, vocab = shape
    if backward:
        return 0
    return n_rows * vocab * dtype.itemsize * (2 if with_grad else 1) + n_rows * (8 + 4)


# (n_rows, vocab) that reach each tile on a GPU. Forward: vocab 100 and 1000 (rows stacked,
# 4 x 128 on 4 warps and 4 x 1024 on 8), 8000 (2 x 8192 on 16) and 128256 (one row streamed in
# 16384-wide chunks, 16 warps: every vocabulary above 8192). Gradient scaling: 4 x 4096 tiles
# for a large vocabulary, 16 x 1024 for a small one, and a single row (1 x 4096, 8 warps).
_COMPILE_FWD_SHAPES = ((8192, 100), (8192, 1000), (8192, 8000), (8192, 128256))
_COMPILE_SCALE_SHAPES = ((8192, 1000), (8192, 128256), (1, 128256))


def compile_cases():
    """For `python -m lab.kernels.aot`: the forward with and without the gradient and the
    gradient scaling (by a scalar and per row) at each GPU tile, for each dtype; int64 targets,
    and int32 ones for bfloat16."""
    from .aot import cases

    out = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        group = str(dtype).removeprefix("torch.")
        targets = (torch.int64, torch.int32) if dtype == torch.bfloat16 else (torch.int64,)
        for (_n_rows, n_cols), target_dtype in ((s, t) for s in _COMPILE_FWD_SHAPES
                                                for t in targets):
            block_rows, block_cols = _fwd_tile(n_cols)
            for write_grad in (True, False):
                args = {"logits_ptr": dtype, "target_ptr": target_dtype,
                        "loss_ptr": torch.float32, "grad_ptr": dtype,
                        "grad_scale_ptr": torch.float32, "n_cols": n_cols,
                        "ignore_index": -100}
                out += cases(_cross_entropy_fwd_kernel, group, args,
                             {"BLOCK_ROWS": block_rows, "BLOCK_COLS": block_cols,
                              "WRITE_GRAD": write_grad},
                             variant=(f"vocab {n_cols} {str(target_dtype)[6:]} targets"
                                      f"{' +grad' if write_grad else ''}"),
                             num_warps=num_warps_for(block_rows * block_cols))
        for n_rows, n_cols in _COMPILE_SCALE_SHAPES:
            block_rows, block_cols = _scale_grad_tile(n_rows, n_cols)
            for per_row in (False, True):
                # the scale is d(out)/d(loss): the loss's dtype, which is the logits'
                out += cases(_scale_grad_kernel, group,
                             {"grad_ptr": dtype, "scale_ptr": dtype, "n_rows": n_rows,
                              "n_cols": n_cols},
                             {"BLOCK_ROWS": block_rows, "BLOCK_COLS": block_cols,
                              "PER_ROW": per_row},
                             variant=f"{n_rows}x{n_cols}{' per row' if per_row else ''}",
                             num_warps=num_warps_for(block_rows * block_cols))
    return out
