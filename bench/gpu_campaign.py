"""The GPU campaign that continues across leases: `make gpu`, `make gpu-plan`, `make
gpu-rehearse`, `make gpu-unpack`, `make gpu-docs` (the logic lives in lab/campaign/).

For a bare GPU machine whose python already has torch, triton and jax: nothing is installed,
the tree runs with PYTHONPATH=. and TRITON_INTERPRET=0, and a package that is missing makes its
step `skipped`, never a crash. Each lease runs what the machine's folder under --out does not
hold yet, in value order (the seed claims' cells, the kernel benchmark, the suite, the
profile), each step within a budget made of its items' stored costs, into one campaign run per
GPU kind.

    python bench/gpu_campaign.py plan                 # coverage and the next lease, any machine
    python bench/gpu_campaign.py run [--pack DIR]     # a lease; --pack: at most 8 files in DIR
    python bench/gpu_campaign.py rehearse --out DIR   # the same on the CPU, tiny, twice
    python bench/gpu_campaign.py unpack FILE...       # a lease's files laid into profiles/
    python bench/gpu_campaign.py docs                 # docs/gpu.md's tables from the runs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.campaign import bundle, costs, execute, gpudocs, lease, plan, stored  # noqa: E402
from lab.core.errors import UsageError  # noqa: E402
from lab.store import provenance  # noqa: E402

H100 = "nvidia-h100"  # the kind a plain lease gets: its machine id starts with this


def _budgets(pairs: list[str]) -> dict[str, float]:
    out = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or out.get(name, -1) < 0:
            raise UsageError(f"--budget expects STEP=SECONDS, got {pair!r}")
    return out


def cmd_plan(out: Path, limit_s: float, kind: str) -> int:
    machines = stored.read_root(out)
    gpus = [m for m in machines.values() if m.gpu]
    if not any(m.id.startswith(kind) for m in gpus):  # a kind with nothing stored yet
        # `nvidia-h100` is the one-GPU machine; `nvidia-h100-x2` names its GPU count
        gpus.append(stored.Machine(kind if lease.gpu_count(kind) else f"{kind}-x1", None))
    steps = plan.gpu_steps(str(ROOT))
    print(f"GPU campaign: {len(steps)} steps in value order; a lease of {limit_s / 60:.0f} min "
          f"runs the items still missing for its GPU kind (stored under {out}/<kind>/)")
    for machine in gpus:
        names = set(stored.campaign_cells(out, machine.id)) if machine.state.get("run") \
            else set()
        plans = lease.plan_lease(steps, machine, machines, limit_s, names)
        est = costs.Estimator(machine, machines)
        note = f"per-cell launch {est.launch_s:.1f} s: {est.launch_note}; margin x" \
               f"{costs.MARGIN}; CPU figures scaled {est.scale_note}"
        print()
        for line in lease.describe(plans, machine, limit_s, note):
            print(line)
    return 0


def cmd_run(out: Path, limit_s: float, budgets: dict, pack: Path | None, steps=None) -> int:
    gpu = steps is None
    steps = plan.gpu_steps(str(ROOT)) if gpu else steps
    campaign = execute.Campaign(out, steps, provenance.machine_id(), ROOT, judge_claims=gpu)
    code = campaign.run(limit_s, budgets)
    if pack is not None:
        files = bundle.pack(out, campaign.machine.id, campaign.state, pack)
        print(f"packed {len(files)} file(s) into {pack}: " + ", ".join(f.name for f in files))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_campaign", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--out", default="profiles")
    p.add_argument("--limit-s", type=float, default=lease.H100_LEASE_S)
    p.add_argument("--kind", default=H100, help="the GPU kind of the next lease (a machine id "
                   "such as nvidia-h100-x2 for several GPUs; default: one H100)")
    for name in ("run", "rehearse"):
        p = sub.add_parser(name)
        p.add_argument("--out", default="profiles" if name == "run" else None,
                       required=name == "rehearse")
        p.add_argument("--limit-s", type=float, default=lease.H100_LEASE_S)
        p.add_argument("--budget", action="append", metavar="STEP=SECONDS",
                       help="cap a step's budget (below its stored costs: stops it there)")
        p.add_argument("--pack", type=Path, default=None,
                       help="pack what the lease wrote into at most 8 files here")
    p = sub.add_parser("unpack")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--out", default="profiles")
    p = sub.add_parser("docs")
    p.add_argument("--out", default="profiles")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "gpu.md")
    args = parser.parse_args(argv)
    try:
        if args.command == "plan":
            return cmd_plan(Path(args.out), args.limit_s, args.kind)
        if args.command == "run":
            return cmd_run(Path(args.out), args.limit_s, _budgets(args.budget), args.pack)
        if args.command == "rehearse":
            return cmd_run(Path(args.out), args.limit_s, _budgets(args.budget), args.pack,
                           plan.rehearsal_steps())
        if args.command == "unpack":
            for line in bundle.unpack(args.files, Path(args.out)):
                print(line)
            return 0
        changed = gpudocs.write(Path(args.out), args.doc)
        print(f"{args.doc}: {'regenerated' if changed else 'unchanged'}")
        return 0
    except UsageError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
