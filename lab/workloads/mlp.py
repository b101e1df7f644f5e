"""The seed's MLP: `SimpleNet` (784 -> 128 -> 10, batch 32), exactly as the seed writes it."""

from __future__ import annotations

from .base import TorchTask, Workload


def _simple_net_class():
    import torch
    import torch.nn as nn

    # Verbatim from the seed document ("PyTorch - Dynamic and Pythonic").
    class SimpleNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = torch.relu(self.fc1(x))
            return self.fc2(x)

    return SimpleNet


def default_shape(device: str) -> dict:
    return {"batch": 32}


def flops(shape: dict, mode: str) -> float:
    # Matmul flops only (2 per multiply-add); bias and ReLU are O(batch*width) and ignored.
    forward = 2 * shape["batch"] * (784 * 128 + 128 * 10)
    return float(forward if mode == "infer" else 3 * forward)  # backward ~ 2x forward


def build_torch(shape: dict, mode: str, device: str, dtype: str, seed: int) -> TorchTask:
    import torch

    torch.manual_seed(seed)
    model = _simple_net_class()().to(device=device, dtype=getattr(torch, dtype))
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(shape["batch"], 784, generator=gen).to(device=device, dtype=model.fc1.weight.dtype)
    target = torch.randint(0, 10, (shape["batch"],), generator=gen).to(device)
    return TorchTask(model=model, inputs=(x,), target=target,
                     loss_fn=torch.nn.functional.cross_entropy, optimizer="sgd")


WORKLOAD = Workload(
    name="mlp",
    summary="seed SimpleNet MLP 784-128-10 (batch 32)",
    default_shape=default_shape,
    flops=flops,
    items_per_step=lambda shape: shape["batch"],
    throughput_unit="samples/s",
    builders={"torch": build_torch},
)
