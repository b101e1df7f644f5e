"""The communication share of JAX and TensorFlow data-parallel cells, read from their profilers'
traces (lab.distributed.comm_trace): which events count as collectives, their intervals, and
the cell's field (a number per rank, or the reason there is none)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from lab.distributed import comm_trace
from lab.distributed.comm import cell_fields as communication


def _hlo(op: str, device: int, ts: float, dur: float) -> dict:
    return {"ph": "X", "name": op, "pid": 701, "tid": 9, "ts": ts, "dur": dur,
            "args": {"hlo_op": op, "device_ordinal": str(device), "hlo_module": "jit_train"}}


def test_jax_collectives_are_the_hlo_collectives_per_device():
    events = [
        _hlo("all-reduce", 0, 100.0, 30.0), _hlo("all-reduce.3", 1, 105.0, 10.0),
        _hlo("all-gather-start", 1, 200.0, 5.0), _hlo("reduce-scatter.1", 0, 300.0, 4.0),
        _hlo("dot.1", 0, 0.0, 90.0),  # compute, not communication
        _hlo("all-reduce-fusion", 0, 400.0, 50.0),  # a fusion's name is no collective
        {"ph": "X", "name": "end: all-reduce", "ts": 131.0, "dur": 1.0, "args": {}},
        {"ph": "M", "name": "thread_name", "args": {"name": "python"}},
    ]
    by_device = comm_trace.jax_intervals(events)
    assert by_device == {"0": [(100.0, 130.0), (300.0, 304.0)],
                         "1": [(105.0, 115.0), (200.0, 205.0)]}
    # an NCCL kernel on CUDA counts, whatever the runtime names its instruction
    assert comm_trace.jax_collective({"ph": "X", "name": "ncclDevKernel_AllReduce_Sum_f32",
                                      "ts": 0, "dur": 1})


def _space(events: list[tuple[str, int, int]], timestamp_ns: int = 1000):
    names = {i: NS(name=name) for i, (name, _, _) in enumerate(events)}
    line = NS(timestamp_ns=timestamp_ns, events=[
        NS(metadata_id=i, offset_ps=offset, duration_ps=dur)
        for i, (_, offset, dur) in enumerate(events)])
    return NS(planes=[NS(event_metadata=names, lines=[line])])


def test_tf_collectives_are_the_collective_ops_in_picoseconds():
    space = _space([("CollectiveReduceV2:CollectiveReduceV2", 2_000_000, 3_000_000),
                    ("CollectiveReduceV2_1:CollectiveReduceV2", 4_000_000, 1_000_000),
                    ("CollectiveOpV2Kernel::Run", 0, 9_000_000),  # the host's bookkeeping
                    ("MatMul:MatMul", 0, 5_000_000)])
    intervals, names = comm_trace.tf_intervals(space)
    # line start 1000 ns = 1 us; offsets and durations in ps
    assert intervals == [(3.0, 6.0), (5.0, 6.0)] and names == {"CollectiveReduceV2"}
    assert comm_trace.tf_collective("allreduce:NcclAllReduce")
    assert not comm_trace.tf_collective("CollectiveReduceV2")  # no op type: not an op event


def test_the_cell_stores_a_share_per_rank_or_the_reason():
    torch_like = {"per_rank": [{"communication": {"comm_share": 0.3}},
                               {"communication": {"comm_share": 0.2}}]}
    assert communication(torch_like) == {"comm_share_per_rank": [0.3, 0.2]}
    jax_like = {"per_rank": [{"communication": {"comm_share": 0.25, "per_device": [0.3, 0.2]}}]}
    assert communication(jax_like) == {"comm_share_per_rank": [0.3, 0.2]}
    none = {"per_rank": [{"communication": {"comm_share": None,
                                            "reason": "no collective op in the trace"}}]}
    assert communication(none) == {"comm_share_reason": "no collective op in the trace"}
    assert communication({"per_rank": [{"rank": 0}]}) == {}  # stored before it was measured


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("backend, strategy, framework", [
    ("jax-jit", "dp", "jax"), ("tf-graph", "mirrored", "tensorflow")])
def test_a_jax_or_tensorflow_cell_reads_its_share_from_the_trace(tmp_path, backend, strategy,
                                                                   framework):
    from lab.cell.spec import CellSpec
    from lab.core.status import Status
    from lab.distributed import launch

    pytest.importorskip(framework)
    spec = CellSpec(workload="transformer", backend=backend, option=None, mode="train",
                    shape={"batch": 4, "seq": 16, "d_model": 32, "heads": 2}, device="cpu",
                    threads=1, repeats=5, precision="fp32", budget_s=30,
                    extra={"ranks": 2, "strategy": strategy})
    result, _ = launch.run_ranks(spec, 2, 600, tmp_path / "r2")
    assert result.status == Status.OK, (result.reason, result.log_tail)
    (rank,) = result.diagnostics["per_rank"]  # one process holds both devices
    share = rank["communication"]
    assert share["events"] and 0 < share["comm_share"] <= 1, share
    shares = communication(result.diagnostics)["comm_share_per_rank"]
    assert len(shares) == (2 if framework == "jax" else 1)  # JAX's per device
