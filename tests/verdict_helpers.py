"""Synthetic stored runs for the verdict tests: real results.json documents (built by
lab.store.folders, readable by load_results) whose samples the test chooses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lab.store import folders as store
from lab.store import provenance

HARDWARE = {"cpu_model": "Test CPU", "cpu_count": 2, "memory_gib": 8.0, "machine": "x86_64",
            "gpus": []}


def samples(median_s: float, n: int = 30, spread: float = 0.02, seed: int = 0) -> list[float]:
    """n positive samples around median_s with a relative spread (lognormal)."""
    rng = np.random.default_rng(seed)
    return list(median_s * np.exp(rng.normal(0, spread, n)))


def cell(workload: str, backend: str, mode: str, data: list[float] | None, device: str = "cpu",
         status: str = "ok", **extra) -> dict:
    """A benchmark entry (data given) or an unmeasured entry (data None)."""
    info = {"workload": workload, "backend": backend, "mode": mode, "device": device,
            "dtype": "float32", "status": status, "reason": None if status == "ok" else "test",
            **extra}
    name = f"{workload}[{backend}|{mode}|{device}|float32|batch=32]"
    if data is None:
        return {"name": name, "extra_info": info}
    return {"name": name, "group": workload, "extra_info": info, "options": {}, "params": {},
            "stats": store.pytest_benchmark_stats(data, 1)}


def speedup_cell(workload: str, backend: str, mode: str, speedup: float, seed: int = 0,
                 **extra) -> dict:
    """A compiled cell whose paired eager baseline is `speedup` times slower."""
    from lab.core import stats

    compiled = samples(1e-3, seed=seed)
    base = samples(1e-3 * speedup, seed=seed + 1)
    ratio = stats.ratio_of_medians(base, compiled)
    return cell(workload, backend, mode, compiled, speedup=ratio.ratio, speedup_ci95=ratio.ci95,
                baseline_samples_s=base, compile_s_cold=20.0, compile_s_warm=4.0,
                break_even_steps_cold=None, break_even_steps_warm=None, **extra)


def document(entries: list[dict], hardware: dict | None = None) -> dict:
    measured = [e for e in entries if "stats" in e]
    unmeasured = [e for e in entries if "stats" not in e]
    hw = hardware or HARDWARE
    info = {"machine_info": {"node": "test", "lab_hardware": hw,
                             "lab_machine_id": provenance.machine_id(hw)},
            "commit_info": {"id": "test"}}
    run = {"run_id": "test", "complete": True, "started": "2026-01-01T00:00:00"}
    return store.results_document({"hardware": hw}, measured, unmeasured, run, info)


def write_run(folder, entries: list[dict], hardware: dict | None = None, when: str = ""):
    doc = document(entries, hardware)
    if when:
        doc["datetime"] = when
    path = folder / store.RESULTS
    store.atomic_write_json(path, doc)
    return path


def run_lab_main(*args: str, timeout: float = 900, env: dict | None = None):
    """Run `lab` as the installed console script does (lab.cli.main), in a subprocess."""
    import os
    import subprocess
    import sys

    code = "import sys; from lab.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def clear_busy(results_json: Path) -> None:
    """Take the load marks off a stored run (a copy): the test machine is shared and busy
    nearly always, and the gate decides nothing on a busy cell (docs/verdicts.md), while what
    such a test checks is how runs meet, not what the load was."""
    doc = json.loads(results_json.read_text())
    for bench in doc["benchmarks"]:
        bench["extra_info"]["machine_busy"] = False
    results_json.write_text(json.dumps(doc))


HW = "Test CPU, 2 cores (CPU)"  # the machine a synthetic run's verdicts name


def claim_of(**fields):
    """One claim from its fields, through the claims file's own parser."""
    from lab.judge import claims

    text = "\n".join(["[[claim]]", 'id = "t"', 'quote = "q"'] +
                     [f"{k} = {v!r}".replace("'", '"') for k, v in fields.items()])
    (claim,) = claims.parse(text)
    return claim


def check_one(claim, entries: list[dict]):
    """The verdict on `claim` over a synthetic CPU run of `entries`."""
    from lab.judge import verdict

    (result,) = verdict.check([claim], verdict.index(document(entries), "cpu"), "cpu", HW)
    return result
