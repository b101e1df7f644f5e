"""perflab: measure deep-learning compilers and kernels fairly.

Importing `lab` loads no framework: torch, TensorFlow, JAX and Triton are imported lazily by
the modules that need them, so `lab list` and `lab show` start fast.
"""

__version__ = "0.1.0"
