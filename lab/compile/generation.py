"""The side of a `generate` cell, for any framework: greedy decoding timed as one step, judged
token by token.

A step is the whole greedy loop (`lab.workloads.llm.generate.greedy_generate`): the prefill,
then one forward per new token with the KV cache. Each step's time to first token is kept, so
a cell reports it beside tokens/s (the run's throughput: batch x new tokens per step).

Accuracy. Greedy tokens are integers: they are equal or not, and a tolerance on their values
means nothing. Two sides that decode freely stop being comparable at their first different
token (from there each conditions on its own text), and one rounding difference where the top
two logits are nearly equal flips a token without anything being wrong. So both sides are
judged *teacher-forced* on the eager side's greedy tokens: at every position, each side's
argmax given the same prefix. Positions where eager's top two logits lie within the
precision's tolerance are near ties: both sides report -1 there and they are not judged. The
candidate must then match eager exactly (stated tolerance 0). The free-running comparison (the
first position where the timed tokens differ, and whether it was a near tie) is kept in the
diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lab.compile.protocol import SideBase
from lab.core import stats
from lab.workloads.base import GenerateTask

NOT_JUDGED = -1  # the token reported at a near tie, on both sides


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu() if x.is_floating_point() else x.detach().cpu()
    return np.asarray(x)


def teacher_forced_logits(task: GenerateTask, forward: Callable, tokens: list) -> np.ndarray:
    """(batch, len(tokens), vocab) float64: the logits that choose each new token when the
    prefix is the prompt and `tokens` before it (framework arrays of (batch, 1), in order)."""
    logits, cache = task.next_logits(forward, task.prompt, task.new_cache())
    out = [_numpy(logits).astype(np.float64)]
    for token in tokens[:-1]:
        logits, cache = task.next_logits(forward, token, cache)
        out.append(_numpy(logits).astype(np.float64))
    return np.stack(out, axis=1)


def near_ties(logits: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """(batch, n) bool: where the top two logits are within atol + rtol * |top|."""
    top2 = np.sort(logits, axis=-1)[..., -2:]
    gap = top2[..., 1] - top2[..., 0]
    return gap <= atol + rtol * np.abs(top2[..., 1])


class GenerateSide(SideBase):
    """Greedy decoding with `forward`; `eager_forward` decodes the reference tokens both sides
    of a cell are judged on, and `tie_tolerance` (rtol, atol) says what a near tie is."""

    def __init__(self, task: GenerateTask, forward: Callable, eager_forward: Callable,
                 tie_tolerance: tuple[float, float], diagnostics: Callable[[], dict] = dict,
                 first_call_done: Callable[[], None] = lambda: None):
        from lab.workloads.llm import generate

        self.generate = generate
        self.task, self.forward, self.eager_forward = task, forward, eager_forward
        self.tie_tolerance = tie_tolerance
        self._backend_diagnostics = diagnostics
        self._first_call_done = first_call_done
        self.first_token_s: list[float] = []  # every step's time to first token
        self._last_tokens = None
        self._token_check: dict | None = None

    def mark_first_call_done(self) -> None:
        self._first_call_done()

    @property
    def is_eager(self) -> bool:
        return self.forward is self.eager_forward

    def step(self):
        generation = self.generate.greedy_generate(self.task, self.forward)
        self.first_token_s.append(generation.first_token_s)
        self._last_tokens = generation.tokens
        return generation  # every token already completed: greedy_generate syncs the last

    def outputs(self) -> list[np.ndarray]:
        """This side's argmax at each position, teacher-forced on eager's greedy tokens, with
        eager's near ties reported as NOT_JUDGED."""
        reference = self.generate.greedy_generate(self.task, self.eager_forward).tokens
        eager_logits = teacher_forced_logits(self.task, self.eager_forward, reference)
        ties = near_ties(eager_logits, *self.tie_tolerance)
        mine = eager_logits if self.is_eager else \
            teacher_forced_logits(self.task, self.forward, reference)
        if not self.is_eager:
            self._token_check = self._free_running_check(reference, ties)
        return [np.where(ties, NOT_JUDGED, mine.argmax(axis=-1)).astype(np.int64)]

    def _free_running_check(self, reference: list, ties: np.ndarray) -> dict:
        """The timed tokens against eager's: where they first differ, and whether eager had a
        near tie there (then the difference is rounding, not an error)."""
        mine = self._last_tokens or self.generate.greedy_generate(self.task, self.forward).tokens
        at = self.generate.first_divergence(self.generate.as_numpy(mine),
                                            self.generate.as_numpy(reference))
        return {"tokens_equal": at is None, "first_divergence": at,
                "divergence_at_near_tie": None if at is None else bool(ties[:, at].any()),
                "near_tie_positions": int(ties.any(axis=0).sum()),
                "positions": int(ties.shape[1])}

    @property
    def accuracy_tolerance(self) -> dict:
        rtol, atol = self.tie_tolerance
        check = self._token_check or {}
        ties = (f"; {check['near_tie_positions']} of {check['positions']} positions were near "
                f"ties and not judged" if check else "")
        diverged = ("" if not check or check["tokens_equal"] else
                    f"; the timed tokens first differ at position {check['first_divergence']}"
                    + (", a near tie in eager's logits" if check["divergence_at_near_tie"]
                       else ""))
        return {"rtol": 0.0, "atol": 0.0,
                "why": f"greedy tokens: each position's argmax, teacher-forced on eager's "
                       f"tokens, must equal eager's; a near tie (eager's top two logits within "
                       f"{atol:g} + {rtol:g} x |top|) is not judged{ties}{diverged}"}

    def reference_fp64(self) -> list[np.ndarray]:
        raise NotImplementedError("greedy tokens are judged exactly, not against float64")

    def diagnostics(self) -> dict:
        info = dict(self._backend_diagnostics())
        if self.first_token_s:
            # the first step holds the compile; the steady time to first token is the rest's
            steady = self.first_token_s[1:] or self.first_token_s
            info.update(first_token_s=stats.median(steady),
                        first_token_s_first_call=self.first_token_s[0],
                        generations=len(self.first_token_s))
        if self._token_check:
            info["tokens"] = dict(self._token_check)
        return info
