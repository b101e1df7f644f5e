"""`make gpu-plan`: the GPU campaign's plan is checked on the CPU, so a typo in a step or a
budget past the limit is found before a GPU is borrowed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from conftest import ROOT

spec = importlib.util.spec_from_file_location("gpu_campaign", ROOT / "bench" / "gpu_campaign.py")
campaign = importlib.util.module_from_spec(spec)
sys.modules["gpu_campaign"] = campaign  # dataclasses look their module up while the class forms
spec.loader.exec_module(campaign)


def test_the_plan_fits_the_budget_a_borrowed_gpu_gives():
    plan = campaign.steps()
    assert sum(s.budget_s for s in plan) <= campaign.TOTAL_BUDGET_S
    assert {s.name for s in plan} >= {"cuda-tests", "kernels", "suite", "suite-fp32", "claims",
                                      "profile"}


def test_every_lab_step_parses_with_the_lab_parser():
    from lab.cli import build_parser

    parser = build_parser()
    for step in campaign.steps("/tmp/runs"):
        if step.argv[:3] == campaign.LAB:
            args = parser.parse_args(step.argv[3:])  # raises on a flag the lab does not have
            if hasattr(args, "device"):
                assert args.device == "cuda", step.name
            assert args.out == "/tmp/runs", step.name


def test_every_named_test_and_bench_file_exists():
    for step in campaign.steps():
        for arg in step.argv:
            if arg.startswith(("tests/", "bench/")):
                assert (ROOT / arg).is_file(), f"{step.name}: {arg} does not exist"


def test_make_gpu_plan_prints_the_steps_on_a_machine_without_a_gpu():
    out = subprocess.run(["make", "-s", "gpu-plan", f"PYTHON={sys.executable}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "GPU campaign:" in out.stdout and "suite-fp32" in out.stdout
    assert "min" in out.stdout.splitlines()[0]
