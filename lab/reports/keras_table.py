"""The Keras suite as the Keras 3 benchmark table lays it out (keras.io "Keras 3 benchmarks":
one row per model, milliseconds per step per backend): here per model, mode, size, device and
precision, each of Keras's TensorFlow, JAX and PyTorch backends eager and compiled
(`jit_compile=True`), and beside them the hf suite's PyTorch model of the same architecture
where the same run measured it (torch eager and torch.compile at the same size and mode).

Each figure is a cell's median step. A compiled cell (`keras-tf-jit`) times its own eager
side in the same process, so the eager column comes from it when no eager cell ran. A cell
that did not pass shows its status instead of a time: a fast wrong answer has no time.
"""

from __future__ import annotations

from lab.workloads import suites
from lab.workloads.suites import keras as keras_suite

BACKENDS = (("tf", "TensorFlow"), ("jax", "JAX"), ("torch", "PyTorch"))
HF_BACKENDS = ("torch-eager", "torch-compile")


def _size(cell: dict) -> str:
    return "tiny" if (cell.get("shape") or {}).get("tiny") else "real"


def _ms(seconds) -> float | None:
    return None if seconds is None else 1000.0 * float(seconds)


def _key(cell: dict) -> tuple:
    return (cell.get("mode"), _size(cell), cell.get("device"), cell.get("precision"))


def rows(cells: list[dict]) -> list[dict]:
    """One row per Keras model and (mode, size, device, precision) in `cells` (a run's,
    lab.store.reader.cells): `{"model", "mode", "size", "device", "precision", "hf",
    "times": {column: ms or status text}}` with columns `tf eager`, `tf jit`, ... `hf
    torch-eager`, `hf torch-compile`."""
    by_model: dict[tuple, dict] = {}
    hf_cells = {(c.get("workload"), c.get("backend"), *_key(c)): c for c in cells
                if suites.suite_of(c.get("workload") or "") == "hf"}
    for cell in cells:
        entry = keras_suite.BY_NAME.get(cell.get("workload") or "")
        if entry is None:
            continue
        row = by_model.setdefault((entry.workload_name, *_key(cell)), {
            "model": entry.workload_name, "mode": cell.get("mode"), "size": _size(cell),
            "device": cell.get("device"), "precision": cell.get("precision"),
            "hf": entry.hf, "times": {}})
        backend = str(cell.get("backend"))
        short, _, kind = backend.removeprefix("keras-").rpartition("-")
        ok = cell.get("status") == "ok"
        times = row["times"]
        times[f"{short} {kind}"] = _ms(cell.get("median_s")) if ok else str(cell.get("status"))
        if kind == "jit" and cell.get("baseline_median_s") is not None:
            times.setdefault(f"{short} eager", _ms(cell["baseline_median_s"]))
    for row in by_model.values():
        for backend in HF_BACKENDS:
            hf = hf_cells.get((row["hf"], backend, row["mode"], row["size"], row["device"],
                               row["precision"]))
            if hf is not None:
                row["times"][f"hf {backend}"] = _ms(hf.get("median_s")) \
                    if hf.get("status") == "ok" else str(hf.get("status"))
    return list(by_model.values())


COLUMNS = [f"{short} {kind}" for short, _ in BACKENDS for kind in ("eager", "jit")] + \
    [f"hf {b}" for b in HF_BACKENDS]


def _text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def markdown(table: list[dict]) -> str:
    """The table in markdown, ms per step; '-' where that backend was not run."""
    head = ["model", "mode", "size"] + [_header(c) for c in COLUMNS]
    lines = ["### keras suite: ms per step per backend (HF PyTorch: the hf suite's model of the "
             "same architecture, in the same run)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * 3 + "--:|" * len(COLUMNS)]
    for r in table:
        lines.append("| " + " | ".join([r["model"], r["mode"], r["size"]] + [
            _text(r["times"].get(c)) for c in COLUMNS]) + " |")
    return "\n".join(lines)


def _header(column: str) -> str:
    names = dict(BACKENDS)
    short, _, kind = column.partition(" ")
    if short == "hf":
        return f"HF PyTorch {'eager' if kind == 'torch-eager' else 'torch.compile'}"
    return f"{names[short]} {'eager' if kind == 'eager' else 'jit_compile'}"


def render(table: list[dict], console) -> None:
    """Under the run's table in the terminal; nothing when the run holds no Keras model."""
    if not table:
        return
    from rich.table import Table

    grid = Table(title="keras suite, ms per step per backend (as the Keras 3 benchmark "
                       "table; HF PyTorch: the hf suite's model of the same architecture)")
    for column in ["model", "mode", "size"] + [_header(c) for c in COLUMNS]:
        grid.add_column(column, justify="left" if column in ("model", "mode", "size")
                        else "right")
    for r in table:
        grid.add_row(r["model"], r["mode"], r["size"],
                     *[_text(r["times"].get(c)) for c in COLUMNS])
    console.print(grid)
