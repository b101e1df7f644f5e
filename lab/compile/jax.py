"""JAX backends: op-by-op dispatch (`jax-eager`) and `jax.jit` (XLA).

`jax-eager` calls the very same functions as `jax-jit`, without `jax.jit` around them: JAX then
dispatches each primitive on its own (each one a small cached executable), which is what a JAX
program that never calls `jit` gets. It is not `jax.disable_jit()`, a debugging mode that also
unrolls JAX's internally jitted library functions into Python and that no one measures in
production.

Both sides share the task's parameters and BatchNorm state (the task object is the holder, like
the torch sides' shared module), and each has its own optimizer state. A train step returns the
new parameters, which `sync` waits for with `block_until_ready`, so the clock never stops while
an asynchronous dispatch is still running.

Threads: XLA's CPU client sizes its thread pool from the CPUs this process may run on, and JAX
0.10 has no flag to change it, so `set_threads` narrows the process's CPU affinity (before JAX
starts its backend) when fewer threads than CPUs are asked for.

Precision (lab.core.precision): `apply_precision` sets JAX's default matmul precision ("highest":
no TF32, "tensorfloat32": TF32 allowed). Mixed precision is the policy torch's autocast
follows, written out: the step casts the float32 parameters and inputs to the compute dtype,
runs the model in it, and computes the loss in float32; gradients and the optimizer update
stay float32, and BatchNorm statistics keep their stored dtype. The read-back traces the step
and lists the dtypes its matmuls and convolutions really take.

A generate cell times the greedy loop with the decoder's forward, `jax.jit`-ted or not, its
parameters bound (lab.compile.generation); under mixed precision the parameters are cast to
the compute dtype once. A ShapeCycle (`llama-varlen`) runs its batches in turn
(lab.compile.cycle); each new padded length is a new trace, counted as `executables`.
"""

from __future__ import annotations

import os

import numpy as np

from lab.compile.cycle import CycleSide
from lab.compile.generation import GenerateSide
from lab.compile.protocol import SideBase, Support, in_precision
from lab.core import precision as precisions
from lab.core.cores import usable_cores
from lab.workloads.base import GenerateTask, JaxTask, ShapeCycle

# Same optimizer hyperparameters as lab.compile.torch (torch.optim.SGD / Adam / AdamW).
SGD_LR = 1e-3
ADAM_LR, ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 1e-4, 0.9, 0.999, 1e-8
ADAMW_WEIGHT_DECAY = 0.01
OPTIMIZERS = ("sgd", "adam", "adamw")


def optimizer(kind: str):
    """(init(params) -> state, update(params, grads, state) -> (params, state)) in plain
    jax.numpy, matching torch.optim.SGD (no momentum), torch.optim.Adam and torch.optim.AdamW
    (Adam after the decoupled decay p -= lr * weight_decay * p, in torch's order)."""
    import jax
    import jax.numpy as jnp

    tree_map = jax.tree_util.tree_map
    if kind not in OPTIMIZERS:  # never a silent fallback to another optimizer
        raise ValueError(f"unknown optimizer {kind!r}; valid: {', '.join(OPTIMIZERS)}")
    decay = ADAMW_WEIGHT_DECAY if kind == "adamw" else 0.0
    if kind == "sgd":
        def init(params):
            return ()

        def update(params, grads, state):
            return tree_map(lambda p, g: p - SGD_LR * g, params, grads), state

        return init, update

    def adam_init(params):
        zeros = tree_map(jnp.zeros_like, params)
        return {"t": jnp.zeros((), jnp.int32), "m": zeros, "v": tree_map(jnp.zeros_like, params)}

    def adam_update(params, grads, state):
        t = state["t"] + 1
        m = tree_map(lambda m, g: ADAM_BETA1 * m + (1 - ADAM_BETA1) * g, state["m"], grads)
        v = tree_map(lambda v, g: ADAM_BETA2 * v + (1 - ADAM_BETA2) * g * g, state["v"], grads)
        tf = t.astype(jnp.float32)
        c1, c2 = 1 - ADAM_BETA1 ** tf, 1 - ADAM_BETA2 ** tf

        def step(p, m, v):
            p = p * (1 - ADAM_LR * decay) if decay else p  # AdamW: decay before the update
            return (p - ADAM_LR * (m / c1) / (jnp.sqrt(v / c2) + ADAM_EPS)).astype(p.dtype)

        return tree_map(step, params, m, v), {"t": t, "m": m, "v": v}

    return adam_init, adam_update


def _mixed_compute_dtype(precision: str) -> str | None:
    """The compute dtype of `precision` when it is mixed; None otherwise."""
    policy = precisions.policy(precision)
    return policy.compute_dtype if policy.autocast else None


def _cast_floating(jax, tree, dtype):
    import jax.numpy as jnp

    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x

    return jax.tree_util.tree_map(cast, tree)


def _functions(task: JaxTask, compute_dtype: str | None = None):
    """Pure infer / loss-and-grads / train functions of (params, state, inputs, ...);
    `compute_dtype`: mixed precision (the model in that dtype, the loss in float32)."""
    import jax

    def forward(params, state, inputs, train):
        if compute_dtype is not None:
            params, inputs = (_cast_floating(jax, params, compute_dtype),
                              _cast_floating(jax, inputs, compute_dtype))
        if task.state is None:
            return task.apply(params, *inputs), None
        out, new_state = task.apply(params, state, *inputs, train=train)
        if compute_dtype is not None:  # stored statistics keep their dtype (no retrace)
            new_state = jax.tree_util.tree_map(lambda new, old: new.astype(old.dtype),
                                               new_state, state)
        return out, new_state

    def infer(params, state, inputs):
        return forward(params, state, inputs, False)[0]

    def loss(params, state, inputs, target):
        out, new_state = forward(params, state, inputs, True)
        if compute_dtype is not None:
            out = _cast_floating(jax, out, "float32")
        return task.loss_fn(out, target), new_state

    def loss_and_grads(params, state, inputs, target):
        (value, new_state), grads = jax.value_and_grad(loss, has_aux=True)(
            params, state, inputs, target)
        return value, grads, new_state

    return infer, loss_and_grads


class JaxSide(SideBase):
    """One side of a JAX cell: the same functions, jitted or dispatched op by op."""

    def __init__(self, task: JaxTask, mode: str, jit: bool):
        import jax

        self.jax, self.task, self.mode, self.jit = jax, task, mode, jit
        self.compute_dtype = _mixed_compute_dtype(task.precision)
        infer, loss_and_grads = _functions(task, self.compute_dtype)
        opt_init, opt_update = optimizer(task.optimizer)
        self.opt_state = opt_init(task.params) if mode == "train" else None

        def train(params, opt_state, state, inputs, target):
            value, grads, new_state = loss_and_grads(params, state, inputs, target)
            params, opt_state = opt_update(params, grads, opt_state)
            return value, params, opt_state, new_state

        wrap = jax.jit if jit else (lambda f: f)
        self._infer, self._loss_and_grads, self._train = (wrap(infer), wrap(loss_and_grads),
                                                          wrap(train))
        self._step_fn = self._infer if mode == "infer" else self._train

    def step(self):
        task = self.task
        if self.mode == "infer":
            return self._infer(task.params, task.state, task.inputs)
        value, task.params, self.opt_state, new_state = self._train(
            task.params, self.opt_state, task.state, task.inputs, task.target)
        if new_state is not None:
            task.state = new_state
        return value, task.params, self.opt_state

    def sync(self, out):
        return self.jax.block_until_ready(out)

    def outputs(self) -> list[np.ndarray]:
        """Infer outputs, or train loss and every gradient; the task's state is not changed."""
        task = self.task
        return _outputs(self.jax, task, self.mode, self._infer, self._loss_and_grads)

    def reference_fp64(self) -> list[np.ndarray]:
        jax = self.jax
        with _x64(jax):
            import jax.numpy as jnp

            def up(x):
                x = jnp.asarray(np.asarray(x))
                return x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x

            tm = jax.tree_util.tree_map
            task = self.task
            task64 = JaxTask(apply=task.apply, params=tm(up, task.params),
                             inputs=tm(up, task.inputs),
                             target=None if task.target is None else up(task.target),
                             loss_fn=task.loss_fn, optimizer=task.optimizer,
                             state=None if task.state is None else tm(up, task.state))
            infer, loss_and_grads = _functions(task64)
            return _outputs(jax, task64, self.mode, infer, loss_and_grads)

    def precision(self) -> dict:
        """The dtypes the parameters are stored in and the ones the step's matmuls and
        convolutions take, read from a trace of the step (jax.make_jaxpr)."""
        jax, task = self.jax, self.task
        infer, _ = _functions(task, self.compute_dtype)
        jaxpr = jax.make_jaxpr(infer)(task.params, task.state, task.inputs)
        params = {str(np.dtype(x.dtype)) for x in jax.tree_util.tree_leaves(task.params)}
        return {"parameter_dtypes": sorted(params), "step_compute_dtype": self.compute_dtype,
                "matmul_operand_dtypes": sorted(_matmul_operand_dtypes(jaxpr.jaxpr))}

    def diagnostics(self) -> dict:
        info = {"execution": "xla" if self.jit else "op-by-op",
                "weights_from": self.task.weights_source, "precision": self.precision()}
        cache_size = getattr(self._step_fn, "_cache_size", None)
        if self.jit and cache_size is not None:
            compiled = int(cache_size())
            # more than one cached executable means the step was traced again (a recompile)
            info.update(executables=compiled, recompiles=max(0, compiled - 1))
        return info


def _matmul_operand_dtypes(jaxpr) -> set[str]:
    """Dtypes of every dot_general and convolution operand in a jaxpr and the jaxprs nested
    in it (jit, custom_jvp and control-flow bodies)."""
    found = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            found.update(str(np.dtype(v.aval.dtype)) for v in eqn.invars)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(inner, "eqns"):
                    found |= _matmul_operand_dtypes(inner)
    return found


def _x64(jax):
    if hasattr(jax, "enable_x64"):  # jax >= 0.7
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # jax 0.6

    return enable_x64()


def _as_numpy(x) -> np.ndarray:
    a = np.asarray(x)
    # kind "V" is ml_dtypes' bfloat16; accuracy is judged in float64 like the torch side
    return a.astype(np.float64) if a.dtype.kind in "fV" else a


def _outputs(jax, task: JaxTask, mode: str, infer, loss_and_grads) -> list[np.ndarray]:
    if mode == "infer":
        out = infer(task.params, task.state, task.inputs)
        return [_as_numpy(x) for x in jax.tree_util.tree_leaves(out)]
    value, grads, _ = loss_and_grads(task.params, task.state, task.inputs, task.target)
    return [_as_numpy(value)] + [_as_numpy(g) for g in jax.tree_util.tree_leaves(grads)]


def _generate_side(task: GenerateTask, jit: bool) -> GenerateSide:
    import functools

    import jax

    compute = _mixed_compute_dtype(task.precision)
    params = task.params if compute is None else _cast_floating(jax, task.params, compute)
    eager = functools.partial(task.model, params)
    tie = precisions.tolerance(task.precision)
    if not jit:
        return GenerateSide(task, eager, eager, tie,
                            diagnostics=lambda: {"execution": "op-by-op",
                                                 "weights_from": task.weights_source})
    jitted = jax.jit(task.model)

    def diagnostics() -> dict:
        # the prefill's shape and the one-token step's: 2 executables; more is a retrace
        compiled = int(jitted._cache_size())
        return {"execution": "xla", "weights_from": task.weights_source,
                "executables": compiled, "recompiles": max(0, compiled - 2)}

    return GenerateSide(task, functools.partial(jitted, params), eager, tie,
                        diagnostics=diagnostics)


def _side(task, mode: str, jit: bool):
    if isinstance(task, GenerateTask):
        return _generate_side(task, jit)
    if isinstance(task, ShapeCycle):
        return CycleSide(task, JaxSide(task.task, mode, jit=jit))
    return JaxSide(task, mode, jit=jit)


def eager_side(task, mode: str, option=None):
    return _side(task, mode, jit=False)


def jit_side(task, mode: str, option=None):
    return _side(task, mode, jit=True)


SIDES = {"jax-eager": eager_side, "jax-jit": jit_side}


def build_task(workload, shape, mode, device, precision, seed, backend_name: str):
    import jax

    platform = "gpu" if device == "cuda" else "cpu"
    precision = precisions.resolve(precision).value
    with jax.default_device(jax.devices(platform)[0]):
        built = in_precision(workload.build("jax", shape, mode, device,
                                            precisions.policy(precision).storage_dtype, seed),
                             precision, device)
        put = jax.device_put
        if isinstance(built, GenerateTask):
            built.params, built.prompt = put(built.params), put(built.prompt)
            return built
        task = built.task if isinstance(built, ShapeCycle) else built
        task.params, task.inputs = put(task.params), put(task.inputs)
        task.target = None if task.target is None else put(task.target)
        task.state = None if task.state is None else put(task.state)
        if isinstance(built, ShapeCycle):
            built.batches = [(put(inputs), put(target)) for inputs, target in built.batches]
    return built


def support(device: str) -> Support:
    import jax

    if device == "cuda":
        try:
            if not jax.devices("gpu"):
                raise RuntimeError
        except RuntimeError:
            return Support.no("no GPU visible to JAX (install jax[cuda12] on a CUDA machine)")
    return Support.yes()


def set_threads(threads: int) -> None:
    allowed = usable_cores()
    if threads < len(allowed) and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, allowed[:threads])


def versions() -> dict:
    import jax
    import jaxlib

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "backend": jax.default_backend(),
            # what set_threads applied: XLA's CPU pool is as large as the schedulable CPUs
            "threads": {"xla_cpu_threads": len(usable_cores()),
                        "how": "process CPU affinity (XLA CPU pool = schedulable CPUs)"}}


def apply_precision(precision: str, device: str) -> dict:
    """JAX's default matmul precision: "highest" (no TF32, JAX's GPU default is TF32) unless
    the precision allows TF32. Mixed precision is applied by the sides (see the module doc)."""
    import jax

    policy = precisions.policy(precision)
    jax.config.update("jax_default_matmul_precision",
                      "tensorfloat32" if policy.tf32 else "highest")
    return precision_settings(precisions.resolve(precision).value)


def precision_settings(precision: str) -> dict:
    """The precision switches as JAX reports them."""
    import jax

    return {"precision": precision,
            "default_matmul_precision": jax.config.jax_default_matmul_precision,
            "enable_x64": bool(jax.config.jax_enable_x64),
            "mixed_compute_dtype": _mixed_compute_dtype(precision),
            "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind}


def process_env(threads: int, device: str) -> dict:
    """Set before JAX loads: only the asked-for platform (no probing for accelerators), and
    on a GPU allocate as needed instead of preallocating most of the card."""
    return {"JAX_PLATFORMS": "cuda" if device == "cuda" else "cpu",
            "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_CPP_MIN_LOG_LEVEL": "2"}


def cache_env(cache_dir: str) -> dict:
    """JAX's persistent compilation cache in `cache_dir`, keeping every executable however
    small or quick to compile, so the second process's first call is a warm compile."""
    return {"JAX_COMPILATION_CACHE_DIR": cache_dir,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
