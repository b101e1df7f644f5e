"""Shared pieces of the kernel tests: fresh seeds, inputs, the poisoned run, the comparison.

The same tests run on one of two devices, `DEVICE`:

- "cpu", under the Triton interpreter: conftest.py sets TRITON_INTERPRET=1 before any test
  imports Triton (the interpreter is chosen when a kernel is defined), the default;
- "cuda", compiled for the GPU: `TRITON_INTERPRET=0 pytest tests/test_kernel_*.py` on a machine
  with CUDA. The kernels then use their GPU tiles and configs, not the interpreter's.

Importing this module skips the importing test module when Triton is missing, or when the
interpreter is off and there is no CUDA device. Inputs come from `randn` (made on the CPU from
the test's generator, then moved to `DEVICE`), so a test written against these helpers runs
on both. The kernels compute in fp32 and round once; every comparison is against the kernel
file's `reference` run in float64 on the same values, rounded to the dtype, within
`lab.kernels._common.TOLERANCES` at the scale of the expected tensor (`assert_close`).
"""

from __future__ import annotations

import os
import secrets

import pytest
import torch

pytest.importorskip("triton", reason="the kernel tests need Triton")
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
if not INTERPRETED and not torch.cuda.is_available():
    pytest.skip("the kernel tests run on CUDA (TRITON_INTERPRET=0) or on CPU tensors under "
                "TRITON_INTERPRET=1; this machine has no CUDA device", allow_module_level=True)
DEVICE = torch.device("cpu" if INTERPRETED else "cuda")

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def cases(*entries) -> list:
    """pytest params from (shape, dtypes) pairs, ids like `1823x781-float32`."""
    out = []
    for shape, dtypes in entries:
        for dtype in dtypes:
            shape_id = "x".join(map(str, shape)) if not isinstance(shape[0], tuple) else \
                "_".join("x".join(map(str, s)) for s in shape)
            out.append(pytest.param(shape, dtype, id=f"{shape_id}-{dtype_id(dtype)}"))
    return out


def fresh_generator() -> torch.Generator:
    """A generator with a new seed each trial; the seed is printed (pytest shows it when the
    test fails) and LAB_KERNEL_SEED=<seed> replays it."""
    seed = int(os.environ.get("LAB_KERNEL_SEED") or secrets.randbits(31))
    print(f"seed {seed} (replay: LAB_KERNEL_SEED={seed})")
    return torch.Generator().manual_seed(seed)


def randn(shape, dtype: torch.dtype, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """Normal values (clamped to 4 sigma so scaled fp16 stays finite), times scale, on DEVICE.
    Drawn on the CPU, so a seed gives the same values on either device."""
    return (torch.randn(shape, generator=gen).clamp(-4, 4) * scale).to(dtype).to(DEVICE)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype,
                 what: str) -> None:
    """`actual` within `TOLERANCES[dtype]` of `expected` (rounded to dtype): rtol for the one
    rounding of each element; atol, stated for values near 1, times the larger of 1 and the
    largest finite |expected|. The rounding of a sum follows the size of the terms summed, not
    of the element it produces (tests/numerics.py): a large output's small elements carry its
    scale's rounding, and an output below 1 may still be a cancelling sum of the unit-scale
    inputs' terms (a one-column norm's gradient, attention's dq over one key), so the scale
    never drops below theirs."""
    from lab.kernels._common import tolerance

    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    tol = tolerance(dtype)
    finite = expected.double().abs().nan_to_num(0.0, 0.0, 0.0)
    scale = max(finite.max().item() if finite.numel() else 0.0, 1.0)
    torch.testing.assert_close(actual, expected.to(dtype), rtol=tol["rtol"],
                               atol=tol["atol"] * scale,
                               msg=lambda m: f"{what} ({dtype_id(dtype)}, scale {scale:.3g}): {m}")


def _is_float(a) -> bool:
    return isinstance(a, torch.Tensor) and a.is_floating_point()


def check_against_reference(op, reference, args: list, dtype: torch.dtype,
                            gen: torch.Generator, grad_args: tuple = (),
                            names: tuple | None = None, grads_like_eager: bool = False):
    """Run `op(*args)` with poisoned output buffers (forward, and backward with a random dy
    when `grad_args` names differentiable arguments), check that no input changed, and compare
    the output and those gradients with `reference` run in float64 on the same values.

    `grads_like_eager`: the backward stores an intermediate in the input dtype and reduces over
    it (as eager PyTorch does, e.g. a matmul's dz = dc * act'(z)), so a fp16/bf16 gradient is
    off by more than one rounding. Such gradients must then be within twice the max error of
    eager PyTorch in that dtype (the FlashAttention tests' criterion) plus one rounding at the
    largest value: the Triton interpreter converts fp32 to bf16 by truncation, not to nearest
    as the GPU does, so its bf16 results are up to one unit in the last place further off."""
    from lab.kernels._common import poisoned_outputs

    names = names or tuple(f"arg{i}" for i in range(len(args)))
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    kernel_args = [a.detach().clone().requires_grad_(i in grad_args)
                   if isinstance(a, torch.Tensor) else a for i, a in enumerate(args)]
    with poisoned_outputs():
        out = op(*kernel_args)
        if grad_args:
            dy = randn(out.shape, out.dtype, gen)
            out.backward(dy)
    for name, a, b in zip(names, kernel_args, before, strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a.detach(), b), f"the kernel modified its input {name}"

    ref_args = [a.detach().double().requires_grad_(i in grad_args) if _is_float(a) else a
                for i, a in enumerate(args)]
    expected = reference(*ref_args)
    assert_close(out, expected, dtype, "output")
    if grad_args:
        expected.backward(dy.double())
        eager_grads = _eager_grads(reference, args, grad_args, dy) \
            if grads_like_eager and dtype != torch.float32 else None
        for i in grad_args:
            what = f"gradient of {names[i]}"
            if eager_grads is None:
                assert_close(kernel_args[i].grad, ref_args[i].grad, dtype, what)
                continue
            truth = ref_args[i].grad
            error = (kernel_args[i].grad.double() - truth).abs().max().item()
            eager_error = (eager_grads[i].double() - truth).abs().max().item()
            one_rounding = torch.finfo(dtype).eps * truth.abs().max().item()
            assert error <= 2 * eager_error + one_rounding, \
                f"{what} ({dtype_id(dtype)}): max error {error:.3g}, eager PyTorch's " \
                f"{eager_error:.3g}"
    return out


def _eager_grads(reference, args, grad_args, dy) -> dict:
    leaves = [a.detach().clone().requires_grad_(i in grad_args) if isinstance(a, torch.Tensor)
              else a for i, a in enumerate(args)]
    reference(*leaves).backward(dy)
    return {i: leaves[i].grad for i in grad_args}


def check_compiled_matches_eager(fn, args: list, grad_args: tuple = ()) -> None:
    """fn compiled with torch.compile (fullgraph: the op must trace without a graph break)
    gives the output and gradients that fn gives eagerly. fp32 inputs; the ops around the
    kernel may be fused differently by Inductor, hence the fp32 tolerance, not equality."""
    results = []
    for f in (fn, torch.compile(fn, fullgraph=True)):
        leaves = [a.detach().clone().requires_grad_(i in grad_args)
                  if isinstance(a, torch.Tensor) else a for i, a in enumerate(args)]
        out = f(*leaves)
        if grad_args:
            out.sum().backward()
        results.append([out.detach()] + [leaves[i].grad for i in grad_args])
    for i, (eager, compiled) in enumerate(zip(*results, strict=True)):
        assert_close(compiled, eager, eager.dtype, "compiled output" if i == 0 else
                     f"compiled gradient {i}")
