"""The side of a cell whose workload is a `ShapeCycle` (inputs whose length changes between
steps), for any framework: one step runs every batch of the cycle in turn.

The inner side (a torch or JAX side built on the cycle's task) runs one batch per call; this
side points the task at batch i before each call. So the cell's first call holds every
compile the cycle causes (torch.compile's recompiles, JAX's retraces), and its first-call
time less a steady step is the compile seconds over the whole cycle. The first few steps
also time each batch alone (each completed before the next), which splits those seconds by
batch: a batch whose shape already had a graph shows about zero. Accuracy is judged on every
batch's outputs, one after the other.
"""

from __future__ import annotations

import time

from lab.compile.protocol import SideBase
from lab.workloads.base import ShapeCycle

# steps timed batch by batch: the first call (compiles), then steady ones; the last of them is
# the steady reference. Later steps run the batches back to back, as sampling should
TIMED_CYCLES = 3


class CycleSide(SideBase):
    def __init__(self, cycle: ShapeCycle, inner):
        self.cycle, self.inner = cycle, inner
        self.batch_seconds: list[list[float]] = []  # per timed step, per batch

    def _use(self, i: int) -> None:
        task = self.cycle.task
        task.inputs, task.target = self.cycle.batches[i]

    def step(self):
        timed = len(self.batch_seconds) < TIMED_CYCLES
        seconds, out = [], None
        for i in range(len(self.cycle.batches)):
            self._use(i)
            start = time.perf_counter()
            out = self.inner.step()
            if timed:
                self.inner.sync(out)
                seconds.append(time.perf_counter() - start)
        if timed:
            self.batch_seconds.append(seconds)
        return out

    def sync(self, out):
        return self.inner.sync(out)

    def outputs(self) -> list:
        out = []
        for i in range(len(self.cycle.batches)):
            self._use(i)
            out.extend(self.inner.outputs())
        return out

    def reference_fp64(self) -> list:
        out = []
        for i in range(len(self.cycle.batches)):
            self._use(i)
            out.extend(self.inner.reference_fp64())
        return out

    def mark_first_call_done(self) -> None:
        self.inner.mark_first_call_done()

    @property
    def accuracy_tolerance(self):
        return self.inner.accuracy_tolerance

    def diagnostics(self) -> dict:
        from lab.workloads.llm import recompiles

        info = dict(self.inner.diagnostics())
        info["cycle"] = {"lengths": list(self.cycle.lengths), "padded": list(self.cycle.padded),
                         "distinct_shapes": len(set(self.cycle.padded))}
        # graphs (torch.compile) or executables (jax.jit) made over the cycle; each one after
        # the first is a recompile (retrace) that a fixed shape would not have needed
        compiled = info.get("graph_count", info.get("executables"))
        if compiled is not None:
            info["cycle"].update(graphs=compiled, recompiles=max(0, compiled - 1))
        if len(self.batch_seconds) >= 2:
            split = recompiles.compile_seconds(self.batch_seconds[0], self.batch_seconds[-1])
            info["cycle"].update(
                compile_s_per_batch=[round(s, 4) for s in split["compile_s_per_batch"]],
                compile_s_total=round(split["compile_s_total"], 4))
        return info
