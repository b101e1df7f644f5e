"""A model with data-dependent control flow: the branch depends on the values of a tensor.

Eager PyTorch runs it; `torch.export` (and through it `torch-export`, `onnxruntime` and
`tensorrt`) cannot capture it and ends `convert_error` with export's own message; `torchscript`
traces it with a TracerWarning (the trace would bake in one branch) and so scripts it instead.
This is the seed's "complex models may require manual adjustments", written down:

    lab run --workload examples/data_dependent.py:make_model \
        --backend torch-eager,torchscript,torch-export,onnxruntime --mode infer
"""

import torch
import torch.nn as nn


class GatedByValue(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)

    def forward(self, x):
        h = self.fc(x)
        if h.mean() > 0:  # a Python branch on a tensor's value: export cannot guard on it
            return torch.relu(h)
        return torch.tanh(h)


def make_model():
    return GatedByValue(), torch.randn(8, 64)
