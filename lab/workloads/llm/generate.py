"""The greedy decode loop every backend runs, with an eager or a compiled forward.

Greedy (argmax) decoding is deterministic, so the tokens of two backends can be compared.
`greedy_generate` returns the tokens and the two times a decode benchmark reports: time to
first token (the prefill, then the argmax, synced) and the whole loop; tokens/s is
`batch * max_new_tokens / total_s`. A backend that times with its own clock can call `prefill`
and `decode` separately.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..base import GenerateTask


@dataclass
class Generation:
    tokens: list  # max_new_tokens arrays of (batch, 1) ids, in order
    first_token_s: float  # prefill + first argmax, completed
    total_s: float  # the whole loop, every token completed

    @property
    def tokens_per_s(self) -> float:
        batch = int(self.tokens[0].shape[0])
        return batch * len(self.tokens) / self.total_s


def prefill(task: GenerateTask, forward: Callable) -> tuple[Any, Any]:
    """(first new token, cache): one step on the whole prompt into an empty cache."""
    return task.step(forward, task.prompt, task.new_cache())


def decode(task: GenerateTask, forward: Callable, token, cache) -> list:
    """The remaining max_new_tokens - 1 greedy tokens after `token`, one step each."""
    tokens = []
    for _ in range(task.max_new_tokens - 1):
        token, cache = task.step(forward, token, cache)
        tokens.append(token)
    return tokens


def greedy_generate(task: GenerateTask, forward: Callable,
                    prefill_forward: Callable | None = None,
                    clock: Callable[[], float] = time.perf_counter) -> Generation:
    """Prompt -> max_new_tokens greedy tokens. `prefill_forward` (default: `forward`) lets a
    backend compile the prefill apart from the decode step, as gpt-fast does (the prompt's
    shape differs from the one-token step's)."""
    start = clock()
    token, cache = prefill(task, prefill_forward or forward)
    task.sync(token)
    first = clock()
    tokens = [token, *decode(task, forward, token, cache)]
    task.sync(tokens[-1])  # steps depend on each other: the last one done means all are
    return Generation(tokens, first - start, clock() - start)


def as_numpy(tokens: list):
    """The tokens of a Generation as one (batch, max_new_tokens) numpy array."""
    import numpy as np

    return np.concatenate([np.asarray(t.cpu() if hasattr(t, "cpu") else t) for t in tokens],
                          axis=1)


def first_divergence(a, b) -> int | None:
    """The first decode position where two (batch, n) token arrays differ, or None."""
    import numpy as np

    differ = np.nonzero((np.asarray(a) != np.asarray(b)).any(axis=0))[0]
    return int(differ[0]) if differ.size else None


def jax_generate_task(model: Callable, params, prompt, max_new_tokens: int,
                      kv_shape: tuple[int, ...], dtype: str) -> GenerateTask:
    """A GenerateTask for a JAX decoder `model(params, ids, cache) -> (logits, cache)` whose
    cache is `{"k", "v": kv_shape = (layers, batch, kv_heads, max_len, head_dim), "pos"}`."""
    import jax
    import jax.numpy as jnp

    def new_cache():
        return {"k": jnp.zeros(kv_shape, dtype), "v": jnp.zeros(kv_shape, dtype),
                "pos": jnp.zeros((), jnp.int32)}

    def next_logits(forward, ids, cache):
        logits, cache = forward(ids, cache)
        return logits[:, -1], cache

    def step(forward, ids, cache):
        logits, cache = next_logits(forward, ids, cache)
        return jnp.argmax(logits, axis=-1, keepdims=True).astype(jnp.int32), cache

    return GenerateTask(model=model, prompt=jnp.asarray(prompt, jnp.int32),
                        max_new_tokens=max_new_tokens, new_cache=new_cache, step=step,
                        next_logits=next_logits,
                        framework="jax", params=params, sync=jax.block_until_ready,
                        weights_source="torch")
