"""The Python API for notebooks and scripts: the same code as the command line.

    from lab import run, load, gate, check

    folder = run("mlp", backends=["torch-eager", "torch-compile"], repeats=10)
    doc = load(folder)                       # results.json as a dict; cells: lab.store.reader.cells
    verdicts = gate(baseline_folder, folder)  # the document `lab gate --json` prints
    claims = check("claims/seed.toml", run=folder, stored_only=True)

`run` goes through the one run loop (lab.running.loop) with the local executor, as `lab run` does;
`gate` and `check` return the documents that `lab gate --json` and `lab check --json` print
(docs/api.md). Bad input raises lab.core.errors.UsageError with a one-line message, checked by the
same functions as the command line's flags. Ctrl-C during `run` keeps the finished cells (the
run marked incomplete) and then raises KeyboardInterrupt, so a loop of runs stops too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lab.running import defaults
from lab.running import loop as session

__all__ = ["check", "gate", "load", "run"]


def _names(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def run(workloads, backends=("torch-eager", "torch-compile"), modes=("infer",), *,
        device: str = "auto", precision: str | None = None, repeats: int = defaults.DEFAULT_REPEATS,
        shape: dict | None = None, threads: int | None = None, processes: int = 1,
        timeout_s: float = defaults.DEFAULT_TIMEOUT_S, out: str = defaults.DEFAULT_OUT,
        executor: str = "local", ray_address: str | None = None,
        ranks: int | None = None, parallel=None, envs=None,
        progress: Callable[[session.Progress], None] | None = None) -> Path:
    """Measure workloads x backends x modes like `lab run`; returns the stored run's folder.
    A cell that fails is stored with its status (read it with `load`). Ctrl-C: the finished
    cells are kept, the run marked incomplete, and KeyboardInterrupt raised (its message names
    the folder). `progress(event)` is called as each phase of a cell and each cell ends; the
    same events go to the "lab" logger at INFO. `ranks`, `parallel`: as `--ranks`, `--parallel`
    (train cells data parallel over N ranks; docs/distributed.md). `envs`: `NAME=PYTHON`
    strings, as `--env` (every cell under each interpreter; docs/upgrades.md)."""
    from lab.running import executors

    session.check_run_options(timeout_s=timeout_s, processes=processes, executor=executor,
                              ray_address=ray_address)
    selection = session.Selection(
        workloads=_names(workloads), backends=_names(backends), modes=_names(modes),
        device=device, precision=precision, shape=dict(shape or {}), threads=threads,
        repeats=repeats, on_this_machine=executor == "local", ranks=ranks,
        parallel=_names(parallel) if parallel else None, envs=_names(envs) if envs else None)
    cells, resolved = session.plan(selection, timeout_s=timeout_s)
    # the command line that measures the same cells, recorded where `lab run` records its own
    argv = ["run", "--workload", ",".join(selection.workloads),
            "--backend", ",".join(selection.backends), "--mode", ",".join(selection.modes),
            "--device", resolved, "--repeats", str(repeats), "--processes", str(processes)]
    if precision:
        argv += ["--precision", precision]
    argv += [f"--shape={k}={v}" for k, v in selection.shape.items()]
    if ranks is not None:  # data-parallel cells (docs/distributed.md)
        argv += ["--ranks", str(ranks)] + (["--parallel", ",".join(selection.parallel)]
                                          if selection.parallel else [])
    argv += [f"--env={item}" for item in selection.envs or []]
    argv += ["--executor", executor] + (["--ray-address", ray_address] if ray_address else [])
    result = session.run_cells(
        cells, out=out, label=resolved, argv=argv, timeout_s=timeout_s, processes=processes,
        executor=executors.get(executor, **({"address": ray_address}
                                             if executor == "ray" else {})),
        progress=progress)
    if result.interrupted:  # saved above; the caller's loop must stop as well
        raise KeyboardInterrupt(f"interrupted: the finished cells are kept in {result.run_dir} "
                                f"(marked incomplete)")
    return result.run_dir


def load(run: str | Path, out: str = defaults.DEFAULT_OUT) -> dict:
    """A stored run (folder, results.json or run id under `out`) as its results document;
    `lab.store.reader.cells(doc)` gives its cells as flat dicts (pandas.DataFrame takes them)."""
    from lab.store import reader as results

    return results.load_run(str(run), out)


def gate(baseline: str | Path, candidate: str | Path | None, threshold: str = "5%", *,
         force: bool = False, noise_floor: float | None = None,
         allow_missing: bool = False, counts_threshold: str | None = None,
         envs: str | None = None) -> dict:
    """`lab gate BASELINE CANDIDATE --json`: a verdict per benchmark and `failed`; where both
    runs have counts (lab run --counts), decided on them (`counts_threshold`, default 0.5%).
    `envs="old,new"`: two framework environments (`--env`; candidate None: of one run)."""
    from lab.judge import checks

    return checks.gate_json(checks.gate_runs(
        str(baseline), None if candidate is None else str(candidate), threshold, force,
        noise_floor, allow_missing, counts_threshold, envs))


def check(claims: str | Path, run: str | Path | None = None, *, stored_only: bool = False,
          out: str = defaults.DEFAULT_OUT) -> dict:
    """`lab check CLAIMS --json`: a verdict per claim, judged on `run`'s cells and, unless
    `stored_only`, on cells measured now for what it lacks."""
    from lab.judge import checks

    def quiet(line: str) -> None:  # the notebook gets the document, not progress lines
        pass

    return checks.claims_json(checks.judge_claims(
        str(claims), str(run) if run is not None else None, stored_only, out, quiet))
