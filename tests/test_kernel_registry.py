"""The kernel registry and the transformer block's drop-ins, on the CPU under the interpreter."""

import importlib
import subprocess
import sys

import pytest
import torch

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
    close = dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ops.layer_norm(x, w, bias, 1e-5),
                               F.layer_norm(x, (c,), w, bias, 1e-5), **close)
    torch.testing.assert_close(ops.linear(x, weight, None), F.linear(x, weight), **close)
    torch.testing.assert_close(ops.bias_gelu(x, bias), F.gelu(x + bias, approximate="tanh"),
                               **close)
    q, k, v = (z.view(b, t, heads, c // heads).transpose(1, 2).contiguous()
               for z in F.linear(x, weight).split(c, dim=-1))
    torch.testing.assert_close(ops.attention(q, k, v, True),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True), **close)
    torch.testing.assert_close(nn.softmax(x), torch.softmax(x, dim=-1), **close)
    torch.testing.assert_close(nn.matmul(x[0], weight.t(), None, "relu"),
                               torch.relu(x[0] @ weight.t()), **close)
