"""An example user workload: `lab run --workload examples/my_model.py:make_model`.

The factory returns the module and its example inputs; the lab moves both to the device and
dtype it is asked for, and in train mode uses the mean squared output as the loss.
"""

import torch
import torch.nn as nn


def make_model():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(16, 10))
    return model, torch.randn(8, 3, 32, 32)
