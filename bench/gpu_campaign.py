"""The whole GPU campaign in one command: `make gpu` (run) and `make gpu-plan` (print only).

For a bare GPU machine whose python already has torch, triton and jax: nothing is installed,
the tree runs with PYTHONPATH=. and TRITON_INTERPRET=0, and a package that is missing makes
its step `skipped`, never a crash. Each step is one command with a wall-clock budget; a step
that runs past it gets SIGINT (the lab keeps what it finished and marks the run incomplete)
and the campaign goes on. Runs land under OUT/<machine-id>/ like every lab run; the campaign's
own logs and summary under OUT/<machine-id>/<stamp>-gpu-campaign/.

    python bench/gpu_campaign.py plan            # the steps and their budgets, any machine
    python bench/gpu_campaign.py run [--out DIR] # run them, then a one-screen summary
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = [sys.executable, "-m", "lab.cli"]
TOTAL_BUDGET_S = 9 * 60  # what a user has on a borrowed GPU, machine start excluded
# the kernel benchmark at the large end of each sweep, as the first H200 run measured it
KERNEL_CASES = ("ceiling or 8192x8192 or 4096x32768 or 16384x8192 or 16384x16384 or "
                "16384x14336 or 8192x128256 or matmul-4096 or matmul-8192 or attention")


@dataclass
class Step:
    name: str
    what: str  # one line: what the step answers
    argv: list[str]  # the command; "{out}" and "{json}" are filled in at run time
    budget_s: int  # SIGINT after this many seconds
    needs: tuple[str, ...] = ()  # importable packages; missing -> skipped
    lab_run: bool = False  # a `lab` command whose run folder lands under OUT
    env: dict = field(default_factory=dict)


def steps(out: str = "{out}") -> list[Step]:
    cuda = ["--device", "cuda", "--out", out]
    return [
        Step("cuda-tests", "the CUDA paths and every kernel test compiled on the GPU",
             # the ahead-of-time compile check is CPU work that `make test` already does
             [sys.executable, "-m", "pytest", "-q", "-x", "tests/test_cuda.py"] + sorted(
                 str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_kernel_*.py")
                 if p.name != "test_kernel_aot.py"),
             budget_s=60, needs=("torch", "triton")),
        Step("kernels", "the lab's kernels vs eager, torch.compile and Liger at large sizes, "
             "against the measured copy and matmul ceilings",
             [sys.executable, "-m", "pytest", "-q", "bench/bench_kernels.py", "-k",
              KERNEL_CASES, "--benchmark-json={json}"], budget_s=90,
             needs=("torch", "triton")),
        Step("suite", "mlp, transformer, resnet50 x eager, torch.compile, the lab's Triton "
             "kernels, jax.jit, tf XLA x infer, train at the CUDA default precision (amp-bf16)",
             LAB + ["run", "--workload", "mlp,transformer,resnet50", "--backend",
                    "torch-eager,torch-compile,torch-triton,jax-jit,tf-xla",
                    "--mode", "infer,train", "--repeats", "15", "--timeout", "60"] + cuda,
             budget_s=150, needs=("torch",), lab_run=True),
        Step("suite-fp32", "the torch pair in strict fp32 (no TF32): the arithmetic the first "
             "H200 run measured", LAB + ["run", "--workload", "transformer,resnet50",
                                         "--backend", "torch-eager,torch-compile",
                                         "--mode", "infer,train", "--precision", "fp32",
                                         "--repeats", "15", "--timeout", "60"] + cuda,
             budget_s=45, needs=("torch",), lab_run=True),
        Step("llm", "GPT-2 and the Llama-style decoder at their real configs: train, infer, "
             "generate", LAB + ["run", "--workload", "gpt2,llama", "--backend",
                                "torch-eager,torch-compile,jax-jit", "--mode",
                                "train,infer,generate", "--repeats", "10", "--timeout", "60"]
             + cuda, budget_s=60, needs=("torch", "transformers"), lab_run=True),
        # strict fp32: the runtimes skip the mixed precisions (an exported artifact runs in the
        # dtype it was exported in); per call at batch 1, the seed's inference-latency claims'
        # cells, TorchScript and TensorRT first so the budget reaches them
        Step("inference", "the inference runtimes the machine has, beside eager: p50/p90/p99 "
             "per call at batch 1, fp32",
             LAB + ["run", "--workload", "mlp,transformer,resnet50", "--backend",
                    "torch-eager,torchscript,tensorrt,onnxruntime,torch-export", "--mode",
                    "infer", "--precision", "fp32", "--latency", "--batch", "1",
                    "--repeats", "100", "--timeout", "60"] + cuda,
             budget_s=30, needs=("torch",), lab_run=True),
        Step("claims", "the seed's claims judged on the suite's cells (no new cells: the budget "
             "has no room for them)", LAB + ["check", "claims/seed.toml", "--run", "{suite}",
                                             "--stored-only", "--out", out],
             budget_s=30, needs=("torch",)),
        Step("profile", "one transformer cell traced, its hot table and an ncu report",
             LAB + ["profile", "--workload", "transformer", "--backend", "torch-compile",
                    "--mode", "infer", "--timeout", "55"] + cuda,
             budget_s=60, needs=("torch",), lab_run=True),
    ]


def missing(step: Step) -> list[str]:
    return [p for p in step.needs if importlib.util.find_spec(p) is None]


def print_plan(plan: list[Step]) -> None:
    total = sum(s.budget_s for s in plan)
    print(f"GPU campaign: {len(plan)} steps, budget {total / 60:.1f} min "
          f"(limit {TOTAL_BUDGET_S / 60:.0f} min); each step is stopped at its budget")
    for i, s in enumerate(plan, 1):
        gone = missing(s)
        note = f"  [skipped here: {', '.join(gone)} not installed]" if gone else ""
        print(f"{i}. {s.name:11s} {s.budget_s / 60:4.1f} min  {s.what}{note}")
        print(f"   $ {shlex.join(s.argv)}")


def _newest_run(out: Path, machine: str, since: float) -> Path | None:
    runs = [p for p in (out / machine).glob("*/results.json") if p.stat().st_mtime >= since]
    return max(runs, key=lambda p: p.stat().st_mtime).parent if runs else None


def _run_step(step: Step, out: Path, folder: Path, fill: dict) -> dict:
    gone = missing(step)
    if gone:
        return {"status": f"skipped: {', '.join(gone)} not installed", "wall_s": 0.0}
    fill = {**fill, "{out}": str(out), "{json}": str(folder / f"{step.name}.json")}
    absent = [k for k, v in fill.items() if v is None and any(k in a for a in step.argv)]
    if absent:
        return {"status": f"skipped: no {', '.join(absent)} run to read", "wall_s": 0.0}
    argv = []
    for arg in step.argv:
        for key, value in fill.items():
            arg = arg.replace(key, str(value)) if value is not None else arg
        argv.append(arg)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                     os.environ.get("PYTHONPATH")])),
           "TRITON_INTERPRET": "0", **step.env}
    t0 = time.perf_counter()
    with open(folder / f"{step.name}.log", "w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=step.budget_s)
            status = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)  # the lab keeps what it finished
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            status = f"stopped at its budget ({step.budget_s} s)"
    wall = time.perf_counter() - t0
    tail = (folder / f"{step.name}.log").read_text(errors="replace").strip().splitlines()[-3:]
    return {"status": status, "wall_s": round(wall, 1), "tail": tail}


def run(out: Path) -> int:
    from lab.store import folders as store

    plan = steps()
    print_plan(plan)
    machine = store.machine_id()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = out / machine / f"{stamp}-gpu-campaign"
    folder.mkdir(parents=True, exist_ok=False)
    store.atomic_write_json(folder / "fingerprint.json", store.fingerprint())
    summary = []
    fill: dict = {"{suite}": None}
    t0 = time.perf_counter()
    for step in plan:
        print(f"-- {step.name} ({step.budget_s} s budget)", flush=True)
        started = time.time()
        entry = {**asdict(step), **_run_step(step, out, folder, fill)}
        if step.name == "suite":
            fill["{suite}"] = _newest_run(out, machine, started)
        summary.append(entry)
        print(f"   {entry['status']} in {entry['wall_s']:.0f} s", flush=True)
        store.atomic_write_json(folder / "summary.json", summary)
    total = time.perf_counter() - t0
    print(f"\nGPU campaign on {machine}: {total / 60:.1f} min; logs in {folder}")
    for entry in summary:
        print(f"  {entry['name']:11s} {entry['wall_s']:6.0f} s  {entry['status']}")
        for line in entry.get("tail") or []:
            print(f"      {line[:110]}")
    return 0 if all(e["status"] == "ok" or e["status"].startswith("skipped")
                    for e in summary) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_campaign", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("plan", "run"))
    parser.add_argument("--out", default="profiles", help="root folder of run folders")
    args = parser.parse_args(argv)
    if args.command == "plan":
        print_plan(steps())
        return 0
    return run(Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
