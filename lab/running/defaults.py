"""The run's defaults, which the command line shows in its help: a module of constants, so that
`lab --help` loads no run loop (and no numpy)."""

from lab.core import precision as precisions

DEFAULT_OUT = "profiles"
DEFAULT_REPEATS = 30
# --latency: one call per sample, so many more samples for the same cost, and enough that the
# p99 rests on more than one call (the budget still bounds them: BUDGET_SHARE in the loop)
DEFAULT_LATENCY_REPEATS = 200
DEFAULT_TIMEOUT_S = 900.0
DTYPES = tuple(precisions.DTYPE_PRECISION)  # --dtype: an alias of the strict precisions
