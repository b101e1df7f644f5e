"""`make gpu-plan`: the GPU campaign's plan is checked on the CPU, so a typo in a step, a cell
the lab would refuse or a lease past its time is found before a GPU is lent."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT

from lab.campaign import lease, plan, stored


def _h100_plan():
    machines = stored.read_root(ROOT / "profiles")
    h100 = stored.Machine("nvidia-h100-x1", None)
    return lease.plan_lease(plan.gpu_steps(str(ROOT)), h100, machines, lease.H100_LEASE_S)


def test_an_h100_lease_fits_twelve_minutes_with_the_tests_step_and_every_figure_sourced():
    plans = _h100_plan()
    assert sum(p.budget_s for p in plans) <= 12 * 60
    by_name = {p.step.name: p for p in plans}
    assert [p.step.name for p in plans] == ["cuda-tests", "claims", "distributed", "kernels",
                                            "kernel-tests", "suite", "profile",
                                            "model-suite"]
    assert len(by_name["cuda-tests"].now) == 1  # the tests run in every lease
    assert by_name["claims"].now, "the first lease reaches the seed claims' cells"
    for p in plans:
        for _item, cost in p.now + p.later:
            assert cost.seconds > 0 and cost.source
    # the command steps' budgets are the first H200 wave's walls, each with its log
    for name in ("cuda-tests", "kernels", "profile"):
        for _item, cost in by_name[name].now + by_name[name].later:
            assert "step-walls.json" in cost.source, (name, cost.source)
    assert by_name["distributed"].skipped.startswith("skipped: needs >= 2 GPUs")
    assert not by_name["distributed"].now and not by_name["distributed"].later


def test_every_cell_parses_with_the_lab_parser_on_cuda():
    from lab.cli import build_parser

    parser = build_parser()
    for step in plan.gpu_steps(str(ROOT)):
        for item in step.items:
            if item.cell:
                args = parser.parse_args(["run", *item.argv, "--out", "/tmp/runs"])
                assert args.device == "cuda", item.name
            elif list(item.argv[:3]) == plan.LAB:
                args = parser.parse_args(list(item.argv[3:]))
                assert args.device == "cuda", step.name


def test_every_named_test_and_bench_file_exists():
    for step in plan.gpu_steps(str(ROOT)):
        for item in step.items:
            for arg in item.argv:
                if arg.startswith(("tests/", "bench/")):
                    assert (ROOT / arg).is_file(), f"{step.name}: {arg} does not exist"


def test_no_cell_is_planned_twice():
    names = [i.name for s in plan.gpu_steps(str(ROOT)) for i in s.items if i.cell]
    assert len(names) == len(set(names))


def test_make_gpu_plan_prints_the_coverage_the_stored_h200_runs_give():
    out = subprocess.run(["make", "-s", "gpu-plan", f"PYTHON={sys.executable}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    h200 = text[text.index("GPU kind nvidia-h200-x1"):]
    h200 = h200[:h200.find("\nGPU kind", 1)] if "\nGPU kind" in h200[1:] else h200
    # the first H200 wave stored resnet50 torch-eager train in fp32, a seed claim's cell
    found = re.search(r"claims\s+measured\s+(\d+)/(\d+)", h200)
    assert found and int(found[1]) >= 1 and int(found[2]) > int(found[1])
    assert "GPU kind nvidia-h100-x1" in text
    h100 = text[text.index("GPU kind nvidia-h100-x1"):]
    # the tests step's budget is the H200's measured wall, with the log line it came from
    assert re.search(r"cuda-tests  <- its wall, \S*cuda_tests.log: '5 passed", h100)
    assert "kernels:softmax-8192x8192  <- 8 case(s) x 1.13 s" in h100
    assert "[skipped: needs >= 2 GPUs, nvidia-h100-x1 has 1]" in h100
    # the kernel tests, never timed on a GPU: their cases x the benchmark's wall per case
    assert re.search(r"kernel-tests:softmax  <- \d+ case\(s\) x 1.13 s, the wall per case "
                     r"of kernels", h100)
