"""Cross-entropy kernel (loss, and the gradient it writes in the forward) against its
reference, F.cross_entropy, on the CPU under the Triton interpreter."""

import pytest
import torch
from kernel_helpers import (
    DEVICE,
    DTYPES,
    assert_close,
    cases,
    check_against_reference,
    check_compiled_matches_eager,
    dtype_id,
    fresh_generator,
    randn,
)

from lab.kernels import cross_entropy as K
from lab.kernels._common import poisoned_outputs

NAMES = ("logits", "target", "ignore_index", "reduction")
IGNORE = -100
LONG_VOCAB = 5003  # several vocabulary chunks under the interpreter
assert LONG_VOCAB > K.MAX_BLOCK_VOCAB


def _args(shape, dtype, gen, reduction="mean", scale=1.0):
    n_rows, vocab = shape
    target = torch.randint(0, vocab, (n_rows,), generator=gen)
    ignored = torch.rand(n_rows, generator=gen) < 0.1  # about one row in ten
    ignored[:1] = False  # at least one counted row, or the mean is 0 / 0
    target[ignored] = IGNORE
    return [randn(shape, dtype, gen, scale=scale), target.to(DEVICE), IGNORE, reduction]


@pytest.mark.parametrize("shape, dtype", cases(
    ((1823, 781), (torch.float32,)),
    ((37, LONG_VOCAB), DTYPES),
    ((1, 1), DTYPES),
))
def test_forward_backward(shape, dtype):
    gen = fresh_generator()
    check_against_reference(K.cross_entropy, K.reference, _args(shape, dtype, gen), dtype, gen,
                            grad_args=(0,), names=NAMES)


@pytest.mark.parametrize("reduction", K.REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_reductions(dtype, reduction):
    gen = fresh_generator()
    check_against_reference(K.cross_entropy, K.reference,
                            _args((19, 1500), dtype, gen, reduction), dtype, gen,
                            grad_args=(0,), names=NAMES)


@pytest.mark.parametrize("scale", [1e4, 1e-6], ids=["large", "small"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_extreme_values(dtype, scale):
    # large: logsumexp must subtract the running max; small: the loss is log(vocab)
    gen = fresh_generator()
    check_against_reference(K.cross_entropy, K.reference,
                            _args((9, LONG_VOCAB), dtype, gen, "sum", scale=scale), dtype, gen,
                            grad_args=(0,), names=NAMES)


def test_without_grad_writes_no_gradient():
    gen = fresh_generator()
    logits, target, _, _ = _args((7, 100), torch.float32, gen)
    with torch.no_grad():
        loss, grad = torch.ops.lab.cross_entropy(logits, target, IGNORE, "mean", False)
    assert grad.numel() == 0
    assert_close(loss, K.reference(logits.double(), target), torch.float32, "loss")


@pytest.mark.parametrize("reduction", K.REDUCTIONS)
def test_unit_upstream_gradient(reduction):
    # loss.backward() starts from exactly 1: the scaling kernel must leave the gradient as the
    # forward wrote it (and it must have been written whole: the buffer starts poisoned)
    gen = fresh_generator()
    logits, target, _, _ = _args((19, 1500), torch.float32, gen, reduction)
    with poisoned_outputs():
        leaf = logits.clone().requires_grad_()
        K.cross_entropy(leaf, target, IGNORE, reduction).backward(
            torch.ones(19, device=DEVICE) if reduction == "none"
            else torch.tensor(1.0, device=DEVICE))
    ref = logits.double().requires_grad_()
    K.reference(ref, target, IGNORE, reduction).sum().backward()
    assert_close(leaf.grad, ref.grad, torch.float32, "gradient")


def test_all_rows_ignored():
    # F.cross_entropy gives NaN (0 / 0) for the mean and a zero gradient
    logits = torch.randn(4, 50, requires_grad=True, device=DEVICE)
    target = torch.full((4,), IGNORE, device=DEVICE)
    loss = K.cross_entropy(logits, target)
    loss.backward()
    assert torch.isnan(loss)
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_empty(reduction):
    gen = fresh_generator()
    check_against_reference(K.cross_entropy, K.reference,
                            _args((0, 100), torch.float32, gen, reduction), torch.float32, gen,
                            grad_args=(0,), names=NAMES)


def test_second_backward_is_refused():
    # the backward scales the stored gradient in place; autograd's version check must stop a
    # second backward through the same graph from scaling it twice
    logits = torch.randn(3, 40, requires_grad=True, device=DEVICE)
    loss = K.cross_entropy(logits, torch.tensor([1, 2, 3], device=DEVICE))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_inside_torch_compile():
    gen = fresh_generator()
    logits, target, _, _ = _args((5, 1100), torch.float32, gen)
    check_compiled_matches_eager(lambda x: K.cross_entropy(x * 2.0, target) * 3.0, [logits],
                                 grad_args=(0,))


def test_rejects_bad_input():
    logits = torch.randn(4, 10, device=DEVICE)
    with pytest.raises(ValueError, match=r"target must have shape \(4,\)"):
        K.cross_entropy(logits, torch.zeros(3, dtype=torch.int64, device=DEVICE))
    with pytest.raises(TypeError, match="target has dtype torch.float32"):
        K.cross_entropy(logits, torch.zeros(4, device=DEVICE))
    with pytest.raises(ValueError, match="logits must have 2 dimensions"):
        K.cross_entropy(torch.randn(2, 2, 10, device=DEVICE),
                        torch.zeros(2, dtype=torch.int64, device=DEVICE))
    with pytest.raises(ValueError, match="reduction='avg'"):
        K.cross_entropy(logits, torch.zeros(4, dtype=torch.int64, device=DEVICE),
                        reduction="avg")
