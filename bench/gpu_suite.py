"""The HF model suite on a GPU, resumable across leases: `make gpu-suite`.

A suite of 33 models x eager/compiled x infer/train does not fit one borrowed GPU's minutes
(`make gpu` has its 9 minutes spoken for). Each call continues the newest incomplete suite run
of this machine under OUT (`lab run --resume`), or starts one, and stops it with SIGINT at its
budget: the lab keeps every finished cell, so successive leases extend one run until it is
complete. The selection is fixed here, since a resume must ask for the same cells.

    python bench/gpu_suite.py [--out DIR] [--budget SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SELECTION = ["--suite", "hf", "--backend", "torch-eager,torch-compile", "--mode", "infer,train",
             "--device", "cuda", "--repeats", "15", "--timeout", "120"]


def newest_incomplete(out: Path, machine: str) -> Path | None:
    """The newest run of this machine under `out` that ran this selection and is not complete."""
    found = []
    for path in (out / machine).glob("*/results.json"):
        try:
            lab = json.loads(path.read_text()).get("lab") or {}
        except (OSError, ValueError):
            continue
        argv = lab.get("argv") or []
        if not lab.get("complete") and all(a in argv for a in SELECTION[:2]) \
                and "cuda" in argv:
            found.append(path)
    return max(found, key=lambda p: p.stat().st_mtime).parent if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_suite", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="profiles")
    parser.add_argument("--budget", type=float, default=8 * 60,
                        help="seconds before the run is stopped (its cells kept)")
    args = parser.parse_args(argv)
    from lab.store import provenance

    out = Path(args.out)
    previous = newest_incomplete(out, provenance.machine_id())
    command = [sys.executable, "-m", "lab.cli", "run", *SELECTION, "--out", str(out)]
    if previous is not None:
        command += ["--resume", str(previous)]
        print(f"continuing {previous}", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "TRITON_INTERPRET": "0"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=args.budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # finished cells kept, the run marked incomplete
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
