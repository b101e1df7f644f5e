"""Peak memory of a cell, per side and per phase, read from where each framework keeps it.

- CUDA, torch: the caching allocator's `max_memory_allocated` (what tensors held, not what
  the allocator reserved), reset before each measured phase.
- CUDA, TensorFlow: `tf.config.experimental.get_memory_info("GPU:0")["peak"]`, reset with
  `reset_memory_stats`.
- CUDA, JAX: the device's `memory_stats()["peak_bytes_in_use"]`; JAX cannot reset it, so a
  phase's peak is the process's peak so far (said so in `resettable`).
- CPU, every framework: the process's resident set (VmRSS) and its high-water mark (VmHWM),
  which Linux resets on `echo 5 > /proc/self/clear_refs`. Before each phase, freed heap is
  handed back to the OS (glibc `malloc_trim`) so a phase's peak counts the pages it touches,
  not what the phase before left in the allocator.

A phase's figure is its peak minus what was in use when it began: the memory the phase itself
needed on top of the weights and inputs already resident.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from pathlib import Path


class _Probe:
    name = "none"
    resettable = False

    def reset(self) -> None:
        """Start a phase: forget the peak so far (where the framework allows)."""

    def in_use(self) -> int:
        return 0

    def peak(self) -> int:
        return 0


class ProcessRss(_Probe):
    name = "process RSS (VmRSS / VmHWM)"

    def __init__(self):
        self.resettable = Path("/proc/self/clear_refs").exists()
        libc = ctypes.util.find_library("c")
        self._trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None

    @staticmethod
    def _status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # kB
        return 0

    def reset(self) -> None:
        if self._trim is not None:
            self._trim(0)
        if self.resettable:
            Path("/proc/self/clear_refs").write_text("5")

    def in_use(self) -> int:
        return self._status("VmRSS")

    def peak(self) -> int:
        return self._status("VmHWM")


class TorchCuda(_Probe):
    name = "torch.cuda max_memory_allocated"
    resettable = True

    def __init__(self):
        import torch

        self.torch = torch

    def reset(self) -> None:
        self.torch.cuda.synchronize()
        self.torch.cuda.reset_peak_memory_stats()

    def in_use(self) -> int:
        return int(self.torch.cuda.memory_allocated())

    def peak(self) -> int:
        self.torch.cuda.synchronize()
        return int(self.torch.cuda.max_memory_allocated())


class TfGpu(_Probe):
    name = "tf.config.experimental.get_memory_info('GPU:0')"
    resettable = True

    def __init__(self):
        import tensorflow as tf

        self.exp = tf.config.experimental

    def reset(self) -> None:
        self.exp.reset_memory_stats("GPU:0")

    def in_use(self) -> int:
        return int(self.exp.get_memory_info("GPU:0")["current"])

    def peak(self) -> int:
        return int(self.exp.get_memory_info("GPU:0")["peak"])


class JaxGpu(_Probe):
    name = "jax device memory_stats peak_bytes_in_use"
    resettable = False

    def __init__(self):
        import jax

        self.device = jax.devices("gpu")[0]

    def _stats(self) -> dict:
        return self.device.memory_stats() or {}

    def in_use(self) -> int:
        return int(self._stats().get("bytes_in_use", 0))

    def peak(self) -> int:
        return int(self._stats().get("peak_bytes_in_use", 0))


def probe(framework: str, device: str) -> _Probe:
    """Where this cell's memory is read: the device allocator on CUDA, the process on CPU."""
    if device == "cuda":
        return {"torch": TorchCuda, "tf": TfGpu, "jax": JaxGpu}.get(framework, _Probe)()
    return ProcessRss()


@dataclass
class Phase:
    """One measured phase: bytes in use when it began, and its peak above that."""

    start_bytes: int
    peak_bytes: int

    @property
    def above_start_bytes(self) -> int:
        return max(self.peak_bytes - self.start_bytes, 0)


def begin(p: _Probe) -> int:
    p.reset()
    return p.in_use()


def end(p: _Probe, start: int) -> Phase:
    return Phase(start, max(p.peak(), start))


def mib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 3)


# Below this, a step peak is allocator noise, not a working set: the seed's MLP (batch 32)
# measured 0 to 0.15 MiB per step on the CPU's RSS probe, and ratios of such numbers
# ran from 0.67 to 11 between backends doing the same work (docs/memory.md)
MEMORY_RATIO_FLOOR_MIB = 1.0


def unresolved_memory_ratio(eager_mib: float | None, candidate_mib: float | None,
                            resettable: bool = True,
                            names: tuple[str, str] = ("eager", "candidate")) -> str | None:
    """Why eager / candidate step memory (MiB) makes no ratio; None when it makes one. The
    cell stores its ratio by this rule and lab.judge.verdict judges claims by it (`names` say
    which two sides, where they are two backends' cells)."""
    if not resettable:
        return "the probe cannot reset its peak: the two sides are not apart"
    if eager_mib is None or candidate_mib is None:
        return "a side's step peak was not measured"
    small = [name for name, mib in zip(names, (eager_mib, candidate_mib), strict=True)
             if mib < MEMORY_RATIO_FLOOR_MIB]
    if small == [names[1]]:
        # ONNX Runtime's and LiteRT's arenas: the working memory was taken at the first call
        return (f"{names[1]}'s step peak is under {MEMORY_RATIO_FLOOR_MIB:g} MiB above "
                f"resident: its working memory stays from the first call (see that peak)")
    if small:
        return f"{' and '.join(small)} step peak under {MEMORY_RATIO_FLOOR_MIB:g} MiB: " \
               f"allocator noise, not a working set"
    return None
