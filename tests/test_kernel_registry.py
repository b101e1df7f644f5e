"""The kernel registry and the transformer block's drop-ins, on the CPU under the interpreter."""

import importlib
import subprocess
import sys

import pytest
import torch
from numerics import assert_close_scaled

import lab.kernels


def test_descriptions_need_neither_torch_nor_triton():
    code = ("import sys, lab.kernels as k; assert k.DESCRIPTIONS; "
            "assert 'torch' not in sys.modules and 'triton' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_op_has_the_kernel_file_layout():
    pytest.importorskip("triton", reason="the kernel tests need Triton")
    assert set(lab.kernels.KERNELS) == set(lab.kernels.DESCRIPTIONS)
    for name, module in lab.kernels.KERNELS.items():
        assert module.__name__ == lab.kernels.module_name(name)
        for attr in (name, "reference", "flops", "bytes_moved"):
            assert callable(getattr(module, attr, None)), f"{module.__name__} lacks {attr}()"
        assert hasattr(torch.ops.lab, name), f"lab::{name} is not registered"


def test_transformer_drop_ins_match_eager_ops():
    pytest.importorskip("triton", reason="the kernel tests need Triton")
    # skips unless the kernels can run: CPU tensors under the interpreter, or CUDA
    from kernel_helpers import DEVICE

    nn = importlib.import_module("lab.kernels.nn")
    F = torch.nn.functional
    gen = torch.Generator().manual_seed(0)  # drawn on the CPU: the same values on either device
    b, t, c, heads = 2, 19, 128, 2
    x = torch.randn(b, t, c, generator=gen).to(DEVICE)
    w, bias = (torch.randn(c, generator=gen).to(DEVICE) for _ in range(2))
    weight = torch.randn(3 * c, c, generator=gen).to(DEVICE)
    ops = nn.ops()
    q, k, v = (z.view(b, t, heads, c // heads).transpose(1, 2).contiguous()
               for z in F.linear(x, weight).split(c, dim=-1))
    # (kernel, eager, reduction_len of tests/numerics.py): a norm's mean and variance over c; a
    # matmul's sum over c; GELU's dozen elementwise roundings; attention's scores over the head
    # width, times their largest magnitude (softmax turns a score's absolute error into the
    # same relative error of its weight; these scores reach ~500), and its softmax and
    # weighted sum over t; a softmax over c
    scores = (q @ k.transpose(-1, -2)).abs().max().item() / (c // heads) ** 0.5
    for what, got, want, length in [
            ("layer_norm", ops.layer_norm(x, w, bias, 1e-5),
             F.layer_norm(x, (c,), w, bias, 1e-5), 2 * c),
            ("linear", ops.linear(x, weight, None), F.linear(x, weight), c),
            ("bias_gelu", ops.bias_gelu(x, bias), F.gelu(x + bias, approximate="tanh"), 16),
            ("attention", ops.attention(q, k, v, True),
             F.scaled_dot_product_attention(q, k, v, is_causal=True),
             int(c // heads * max(1.0, scores)) + 2 * t),
            ("softmax", nn.softmax(x), torch.softmax(x, dim=-1), c),
            ("matmul", nn.matmul(x[0], weight.t(), None, "relu"), torch.relu(x[0] @ weight.t()),
             c)]:
        assert_close_scaled(got, want, dtype="float32", reduction_len=length, what=what)
