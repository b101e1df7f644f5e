"""perflab: measure deep-learning compilers and kernels fairly.

Importing `lab` loads no framework: torch, TensorFlow, JAX and Triton are imported lazily by
the modules that need them, so `lab list` and `lab show` start fast.
"""

__version__ = "0.1.0"

# the Python API (lab.api), imported on first use so that `import lab` stays cheap. No module
# of the package may share these names: importing a submodule binds its name on the package.
_API = ("run", "load", "gate", "check")


def __getattr__(name: str):
    if name in _API:
        from lab import api

        return getattr(api, name)
    raise AttributeError(f"module 'lab' has no attribute {name!r}")
