"""A run as it is measured: each cell outcome becomes a pytest-benchmark entry (or an
unmeasured cell) with the lab's fields in `extra_info`, and results.json is rewritten after
every cell, so Ctrl-C or a crash of the parent keeps every finished cell; the run is marked
complete only at the end.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from lab import compile as backends
from lab.cell.spec import CellOutcome, benchmark_name
from lab.core import stats
from lab.store import folders as store
from lab.store import provenance
from lab.workloads.base import shape_label


def wall_breakdown(outcome: CellOutcome) -> dict:
    """Where a cell's wall time went, in seconds: what the timed process spent in each phase,
    its start-up (interpreter, imports before the cell's first phase, exit), and the other
    processes (warm-cache compile pass, extra --processes)."""
    walls = outcome.process_wall_s
    phases = outcome.result.phases_s or {}
    out = {"total": round(outcome.wall_s, 3)}
    if walls:
        out["process_start_and_exit"] = round(max(walls[0] - sum(phases.values()), 0.0), 3)
    out.update({name: round(seconds, 3) for name, seconds in phases.items()})
    if outcome.warm is not None and len(walls) > 1:
        out["warm_cache_process"] = round(walls[1], 3)
    rest = walls[2:] if outcome.warm is not None else walls[1:]
    if rest:
        out["more_processes"] = round(sum(rest), 3)
    return out


def lab_fields(outcome: CellOutcome, workload) -> dict:
    """The lab's own numbers for a cell: what goes into pytest-benchmark's extra_info."""
    spec, result = outcome.spec, outcome.result
    info = backends.BACKENDS[spec.backend]
    fields = {
        "workload": spec.workload, "backend": outcome.label, "framework": info.framework.value,
        "mode": spec.mode, "device": spec.device, "shape": spec.shape,
        # the precision, its storage dtype (kept for readers of runs stored before precisions
        # existed) and the switches as the framework reported them
        "precision": spec.precision, "dtype": spec.dtype,
        "precision_settings": result.precision_settings,
        "threads": spec.threads, "status": str(outcome.status), "reason": result.reason,
        "baseline_backend": info.baseline, "timer": result.timer,
        "inner_steps": result.inner_steps, "warmup": result.warmup,
        "cold_l2": spec.cold_l2,
        "cuda_graphs": spec.cuda_graphs, "cell_wall_s": round(outcome.wall_s, 3),
        # one call per sample (--latency): the samples are per-call latencies
        "latency": spec.latency,
        "sampling": result.sampling, "memory": result.memory,
        "wall_s_breakdown": wall_breakdown(outcome),
        # "forked": the cell's processes were forked from one that had imported the
        # framework (lab.cell.fork); "fresh": each started its own interpreter
        "cell_process": result.started,
        "versions": result.versions, "accuracy": result.accuracy,
        "diagnostics": result.diagnostics, "first_call_s": result.first_call_s,
        "loss": result.loss,  # train: which loss ran (a user's model: lab.workloads.user)
        # `lab run --env`: the environment and its interpreter (its versions: `versions`)
        **({"env": spec.env["name"], "python": spec.env["python"]} if spec.env else {}),
        **outcome.extra,  # links added after timing, e.g. the cell's trace
        # a user's model is reproducible only with the user's code: its repository's commit
        **({"workload_commit": store.workload_commit(workload.source)}
           if workload is not None and workload.source != "builtin" else {}),
    }
    samples = result.samples_s or []
    if not samples:
        return fields
    summary = stats.summarize(samples)
    median = summary.median
    fields.update(
        median_s=median, median_ci95_s=summary.median_ci95, iqr_s=summary.iqr,
        p20_s=summary.p20, p80_s=summary.p80, noisy=summary.noisy,
        relative_ci_width=summary.relative_ci_width,
    )
    flops = workload.flops(spec.shape, spec.mode) if workload else float("nan")
    # generate: the tokens a step produces (batch x new tokens), so throughput is tokens/s
    items = workload.items(spec.shape, spec.mode) if workload else 1
    fields.update(
        flops_per_step=flops, achieved_gflops=flops / median / 1e9 if flops == flops else None,
        throughput=items / median,
        # the interval of items/median maps the median's interval (hi time -> lo throughput)
        throughput_ci95=(items / summary.median_ci95[1], items / summary.median_ci95[0]),
        throughput_unit=workload.throughput_unit if workload else None,
    )
    if spec.mode == "generate":  # the two numbers a decode benchmark reports
        fields.update(tokens_per_s=items / median,
                      first_token_s=(result.diagnostics or {}).get("first_token_s"))
    if spec.latency:  # per-call percentiles in ms with bootstrap 95% intervals, both sides
        fields["latency_ms"] = stats.latency_percentiles(samples, scale=1e3)
        if result.baseline_samples_s:
            fields["baseline_latency_ms"] = stats.latency_percentiles(
                result.baseline_samples_s, scale=1e3)
    if info.compiles:
        cold = result.first_call_s
        warm = outcome.warm.first_call_s if outcome.warm else None
        fields.update(
            first_call_s_cold=cold, first_call_s_warm=warm,
            # the first call also executes one step; what is left is compile work
            compile_s_cold=max(cold - median, 0.0) if cold is not None else None,
            compile_s_warm=max(warm - median, 0.0) if warm is not None else None,
            warm_status=str(outcome.warm.status) if outcome.warm else None,
        )
        base = result.baseline_samples_s or []
        if base:
            ratio = stats.ratio_of_medians(base, samples)
            base_median = float(stats.summarize(base).median)
            fields.update(
                baseline_samples_s=base, baseline_median_s=base_median,
                speedup=ratio.ratio, speedup_ci95=ratio.ci95, speedup_p_value=ratio.p_value,
                speedup_min_detectable=ratio.min_detectable_ratio,
                break_even_steps_cold=stats.break_even_steps(fields["compile_s_cold"],
                                                             base_median, median),
                break_even_steps_warm=stats.break_even_steps(fields["compile_s_warm"],
                                                             base_median, median),
            )
    return fields


def to_benchmark(outcome: CellOutcome, workload) -> dict | None:
    """A pytest-benchmark entry, or None when the cell has no samples."""
    spec, result = outcome.spec, outcome.result
    samples = result.samples_s or []
    if not samples:
        return None
    name = benchmark_name(spec, outcome.label)
    return {
        "group": f"{spec.workload} {spec.mode} {spec.device}",
        "name": name, "fullname": f"lab::{name}",
        "params": {"backend": outcome.label, "mode": spec.mode, "device": spec.device,
                   "precision": spec.precision, "dtype": spec.dtype,
                   "shape": shape_label(spec.shape)},
        "param": f"{outcome.label}-{spec.mode}",
        "extra_info": lab_fields(outcome, workload),
        "options": {"disable_gc": False, "timer": result.timer, "min_rounds": spec.repeats,
                    "max_time": None, "min_time": spec.min_sample_s, "warmup": True},
        "stats": store.pytest_benchmark_stats(samples, result.inner_steps or 1),
    }


class RunRecorder:
    """Keeps a run folder's results.json current after every cell."""

    # entries stored by an earlier part of the run, written as they are (lab.running.resume)
    kept_benchmarks: list = []
    kept_unmeasured: list = []

    def __init__(self, run_dir: Path, fp: dict, argv: list[str], kind: str = "run"):
        self.run_dir = Path(run_dir)
        self.fp = fp
        self.outcomes: list[tuple[CellOutcome, object]] = []  # (outcome, its workload)
        self._order: list[str] = []
        self.run = {"run_id": self.run_dir.name, "kind": kind, "complete": False,
                    # a --ray-address may carry user:password@: never stored
                    "argv": [provenance.redact(arg) for arg in argv],
                    "started": _dt.datetime.now().isoformat(timespec="seconds"),
                    "finished": None, "fingerprint": store.FINGERPRINT,
                    "load_avg_1m_at_start": fp.get("load_avg_1m_at_start"),
                    # local, or a cluster (ray): then each cell names the node it ran on
                    "executor": (fp.get("executor") or {}).get("name", "local")}
        self._cached = {"machine_info": store.machine_info(fp), "commit_info": store.commit_info()}
        self._machine_id = provenance.machine_id(fp["hardware"])
        store.atomic_write_json(self.run_dir / store.FINGERPRINT, fp)

    def set_order(self, names: list[str]) -> None:
        """The plan's order, kept in results.json so tables list cells as planned whatever
        order an executor finishes them in."""
        self._order = list(names)

    def add(self, outcome: CellOutcome, workload) -> None:
        # every cell says which machine timed it: a cluster's executor names the node's
        # (lab.running.executors.ray); a cell run here ran on this run's machine
        outcome.extra.setdefault("machine_id", self._machine_id)
        self.outcomes.append((outcome, workload))
        if workload is not None and workload.source != "builtin":  # the user's commit beside ours
            sources = sorted({w.source for _, w in self.outcomes
                              if w is not None and w.source != "builtin"})
            self._cached["commit_info"] = store.commit_info(workload_sources=sources)
        self.save()

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o, _ in self.outcomes if o.status.failed]

    def save(self, complete: bool = False) -> Path:
        benchmarks, unmeasured = list(self.kept_benchmarks), list(self.kept_unmeasured)
        for outcome, workload in self.outcomes:
            bench = to_benchmark(outcome, workload)
            if bench is not None:
                benchmarks.append(bench)
            else:
                unmeasured.append({"name": benchmark_name(outcome.spec, outcome.label),
                                   "extra_info": lab_fields(outcome, workload)})
        done = [benchmark_name(o.spec, o.label) for o, _ in self.outcomes]
        self.run["order"] = list(dict.fromkeys([*self._order, *done]))
        if complete:
            self.run.update(complete=True,
                            finished=_dt.datetime.now().isoformat(timespec="seconds"))
        doc = store.results_document(self.fp, benchmarks, unmeasured, self.run, self._cached)
        path = self.run_dir / store.RESULTS
        store.atomic_write_json(path, doc)
        return path
