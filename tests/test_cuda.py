"""The CUDA paths, run for real where a CUDA device exists (skipped with the reason elsewhere;
their logic is covered on the CPU by test_measure.py's fake events)."""

import pytest

torch = pytest.importorskip("torch")

from lab.cell import main as cell  # noqa: E402
from lab.cell.spec import CellSpec  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _spec(**kw):
    base = dict(workload="transformer", backend="torch-eager", option=None, mode="infer",
                shape={"batch": 2, "seq": 64, "d_model": 128, "heads": 4}, precision="fp32",
                device="cuda", threads=1, repeats=5)
    return CellSpec(**{**base, **kw})


@pytest.mark.parametrize("cold_l2", [False, True])
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_event_timing_with_l2_flush_and_graphs(cold_l2, cuda_graphs):
    result = cell.run(_spec(cold_l2=cold_l2, cuda_graphs=cuda_graphs))
    assert result.status == "ok" and result.timer == "cuda_event"
    assert len(result.samples_s) == 5 and min(result.samples_s) > 0


def test_compiled_cuda_cell_checks_accuracy():
    result = cell.run(_spec(backend="torch-compile", option="default", mode="train"))
    assert result.status == "ok" and result.accuracy["passed"]
    assert len(result.baseline_samples_s) == 5
