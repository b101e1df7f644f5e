"""The torch-triton backend: the transformer block with the lab's kernels, checked against
eager on the CPU under Triton's interpreter (correctness only; speed needs CUDA)."""

import pytest

pytest.importorskip("triton")

from conftest import run_lab  # noqa: E402

from lab.cell.spec import CellSpec  # noqa: E402
from lab.core.status import CellFailure  # noqa: E402
from lab.store import reader as results  # noqa: E402


@pytest.mark.slow
def test_transformer_with_lab_kernels_matches_eager_in_both_modes(tmp_path):
    result = run_lab("run", "--workload", "transformer", "--backend", "torch-triton",
                     "--mode", "infer,train", "--device", "cpu", "--repeats", "2",
                     "--shape", "d_model=32", "--shape", "heads=2", "--seq", "16", "--batch", "2",
                     "--out", str(tmp_path), env={"TRITON_INTERPRET": "1"})
    assert result.returncode == 0, result.stderr
    (path,) = tmp_path.glob("*/*/results.json")
    cells = [b["extra_info"] for b in results.load(path)["benchmarks"]]
    assert [c["status"] for c in cells] == ["ok", "ok"], [c.get("reason") for c in cells]
    for c in cells:
        assert c["accuracy"]["passed"] and c["diagnostics"]["triton_interpreter"]


def test_without_cuda_or_interpreter_the_cell_says_why(monkeypatch):
    from lab.cell import main as cell

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    spec = CellSpec(workload="transformer", backend="torch-triton", option=None,
                         mode="infer", shape={"batch": 1, "seq": 4, "d_model": 8, "heads": 2},
                         precision="fp32", device="cpu", threads=1, repeats=2)
    result = cell.run(spec)
    assert result.status == "skipped" and "needs CUDA" in result.reason


def test_a_workload_without_swappable_ops_is_skipped(monkeypatch):
    from lab.cell import main as cell

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    spec = CellSpec(workload="mlp", backend="torch-triton", option=None, mode="infer",
                         shape={"batch": 2}, precision="fp32", device="cpu", threads=1, repeats=2)
    with pytest.raises(CellFailure) as failure:
        cell.run(spec)
    assert failure.value.status == "skipped" and "no swappable ops" in failure.value.reason
