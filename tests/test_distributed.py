"""Data-parallel cells (lab.distributed): the 2-rank step is the 1-rank step on the same
global batch, and a rank that crashes or hangs ends the cell with a status and leaves no
process behind."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

from lab.cell.spec import CellSpec
from lab.core.status import Status
from lab.distributed import launch
from tests.numerics import assert_close_scaled

pytest.importorskip("torch")

SHAPE = {"batch": 4, "seq": 16, "d_model": 32, "heads": 2}
LR = 1e-3  # lab.compile.torch's SGD


def _spec(workload: str, strategy: str, backend: str = "torch-eager", **extra) -> CellSpec:
    return CellSpec(workload=workload, backend=backend, option=None, mode="train",
                    shape=dict(SHAPE), device="cpu", threads=1, repeats=5,
                    precision="fp32", budget_s=30,
                    extra={"ranks": 2, "strategy": strategy, **extra})


def _arrays(folder, ranks: int) -> list[np.ndarray]:
    with np.load(folder / f"check_{ranks}.npz") as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _chain(shape: dict) -> int:
    """reduction_len (tests/numerics.py) of the block's gradients: the forward chain (two
    LayerNorms, qkv, projection and up over d_model, scores over head_dim, softmax and the
    weighted sum over seq, down over 4 d_model), the backward the same chain again, and the
    weight gradients' sums over the batch's tokens, which the ranks split and the all-reduce
    adds in another order."""
    d, t = shape["d_model"], shape["seq"]
    forward = 5 * d + d // shape["heads"] + 2 * t + 4 * d
    return 2 * forward + shape["batch"] * t


@pytest.mark.parametrize("backend, strategy", [
    ("torch-eager", "ddp"),
    pytest.param("torch-eager", "fsdp", marks=(pytest.mark.slow, pytest.mark.long)),
    # compiled autograd: minutes of compiling on one core
    pytest.param("torch-compile", "ddp-ca", marks=(pytest.mark.slow, pytest.mark.long)),
    pytest.param("torch-compile", "fsdp-ca", marks=(pytest.mark.slow, pytest.mark.long)),
    pytest.param("jax-jit", "dp", marks=(pytest.mark.slow, pytest.mark.long)),
    pytest.param("tf-graph", "mirrored", marks=(pytest.mark.slow, pytest.mark.long)),
])
def test_two_rank_step_updates_weights_as_one_rank_step(tmp_path, backend, strategy):
    # SGD (the same lr in every framework): the update is lr x the gradient, so the weights
    # carry the gradients' agreement (Adam's first step is lr x sign(g) and would hide it)
    pytest.importorskip({"jax-jit": "jax", "tf-graph": "tensorflow"}.get(backend, "torch"))
    spec = _spec("transformer", strategy, backend, check_only=True, optimizer="sgd")
    for ranks in (1, 2):  # a bound for a hang; a compile on one busy core takes minutes
        result, _ = launch.run_ranks(spec, ranks, 900, tmp_path / f"r{ranks}",
                                     str(tmp_path / "compile-cache"))
        assert result.status == Status.OK, (result.reason, result.log_tail)
    one, two = _arrays(tmp_path / "r1", 1), _arrays(tmp_path / "r2", 2)
    n = (len(one) - 1) // 2
    assert n == 12 and len(two) == len(one)  # the block's 12 parameters, gathered whole
    chain = _chain(SHAPE)
    assert_close_scaled(two[0], one[0], dtype="float32", reduction_len=chain, what="loss")
    for i in range(n):
        g1, g2 = one[1 + i], two[1 + i]
        assert np.max(np.abs(g1)) > 0
        assert_close_scaled(g2, g1, dtype="float32", reduction_len=chain, what=f"grad {i}")
        # w - lr g: the gradients' bound times lr, plus the subtraction's rounding at |w|
        w1, w2 = one[1 + n + i], two[1 + n + i]
        limit = LR * chain * np.finfo(np.float32).eps * np.max(np.abs(g1)) + \
            np.finfo(np.float32).eps * np.max(np.abs(w1))
        assert np.max(np.abs(w2 - w1)) <= limit, f"weights {i}"


FAULTY = """
import os, time
import torch, torch.nn as nn

def make():
    if os.environ.get("RANK") == "1":
        {fault}
    torch.manual_seed(0)
    return nn.Linear(8, 8), torch.randn(4, 8)
"""


def _gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            os.killpg(pid, 0)  # the rank's whole process group: nothing of it may be left
        except ProcessLookupError:
            continue
        return False
    return True


@pytest.mark.parametrize("fault, status, timeout_s", [
    ("os._exit(7)", Status.RUN_ERROR, 120),
    ("time.sleep(3600)", Status.TIMEOUT, 5),
])
def test_a_rank_that_crashes_or_hangs_ends_the_cell(tmp_path, fault, status, timeout_s):
    path = tmp_path / "faulty.py"
    path.write_text(textwrap.dedent(FAULTY).replace("{fault}", fault))
    spec = _spec(f"{path}:make", "ddp")
    result, facts = launch.run_ranks(spec, 2, timeout_s, tmp_path / "r2")
    assert result.status == status, result.reason
    if status == Status.RUN_ERROR:  # rank 0 waited for rank 1 in DDP's first broadcast
        assert result.reason.startswith("rank 1 of 2 exited 7"), result.reason
    assert len(facts["pids"]) == 2 and _gone(facts["pids"])


def test_ranks_refused_before_any_cell_runs():
    from lab.core.errors import UsageError
    from lab.distributed import plan

    assert plan.check(2, None, None, cores=2) == 1  # the cores split between the ranks
    for ranks, strategies, threads, message in [
        (1, None, None, "at least 2 ranks"),
        (3, None, None, "each rank needs one of its own"),
        (2, None, 2, "ranks x threads <= cores"),
        (2, ["zero"], None, "unknown strategy 'zero'"),
    ]:
        with pytest.raises(UsageError, match=message):
            plan.check(ranks, strategies, threads, cores=2)


def test_ranks_make_one_named_cell_per_strategy_and_skip_the_rest():
    from lab import compile as backends
    from lab.core.errors import UsageError
    from lab.distributed import plan

    def cell(backend, mode="train", batch=4):
        spec = _spec("transformer", "", backend).replace(mode=mode, extra={},
                                                         shape={**SHAPE, "batch": batch})
        return spec, backends.resolve(backend), None, None

    out = plan.expand([cell("torch-compile"), cell("jax-jit"), cell("torch-eager", "infer"),
                       cell("tf-eager")], 2, ["ddp", "fsdp"], threads=1)
    labels = [(c.label, reason) for _, c, _, reason in out]
    assert [label for label, _ in labels] == [
        "torch-compile+ddp@2", "torch-compile+fsdp@2", "jax-jit+dp@2",
        "torch-eager+ddp@2", "torch-eager+fsdp@2", "tf-eager"]
    assert [bool(reason) for _, reason in labels] == [False, False, False, True, True, True]
    assert out[0][0].extra == {"ranks": 2, "strategy": "ddp"} and out[0][0].threads == 1
    with pytest.raises(UsageError, match="does not split evenly"):
        plan.expand([cell("torch-eager", batch=3)], 2, None, threads=1)


def test_communication_intervals_count_once_where_they_nest_or_overlap():
    from lab.distributed.comm import _merged_us

    # c10d's op around gloo's, a second collective overlapping the first, one apart
    assert _merged_us([(0, 10), (2, 8), (5, 15), (20, 25)]) == 20
    assert _merged_us([]) == 0


def test_the_api_takes_ranks_and_refuses_them_as_the_cli_does(tmp_path):
    from lab import api
    from lab.core.errors import UsageError

    with pytest.raises(UsageError, match="at least 2 ranks"):
        api.run("transformer", "torch-eager", "train", device="cpu", ranks=1, out=str(tmp_path))
    with pytest.raises(UsageError, match="needs --ranks"):
        api.run("transformer", "torch-eager", "train", device="cpu", parallel="fsdp",
                out=str(tmp_path))
    assert not any(tmp_path.iterdir())  # nothing written
