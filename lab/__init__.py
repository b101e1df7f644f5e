"""perflab: measure deep-learning compilers and kernels fairly.

Importing `lab` loads no framework: torch, TensorFlow, JAX and Triton are imported lazily by
the modules that need them, so `lab list` and `lab show` start fast.
"""

__version__ = "0.1.0"

# the Python API (lab.api), imported on first use so that `import lab` stays cheap. `gate` is
# not re-exported here: `lab.gate` is the module of the gate's statistics, which the import
# system binds on the package whenever it is imported; `from lab.api import gate` is the API.
_API = ("run", "load", "check")


def __getattr__(name: str):
    if name in _API:
        from lab import api

        return getattr(api, name)
    raise AttributeError(f"module 'lab' has no attribute {name!r}")
