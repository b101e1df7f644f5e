"""The CI recipe (examples/github-actions-perf.yml, docs/ci.md): its shell lines run as they
are, with `lab` on PATH, through a push (the first run: no baseline yet; kept as the baseline)
and a pull request (gated against it, the gate appended to the step summary)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from verdict_helpers import clear_busy

WORKFLOW = ROOT / "examples" / "github-actions-perf.yml"
# a small selection in place of the recipe's: the commands are the recipe's own
SMALL = "--workload mlp --backend torch-eager --mode infer --device cpu --threads 2 " \
        "--repeats 5 --processes 2"


def _steps() -> list[dict]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    return doc["jobs"]["perf"]["steps"]


def _workflow_env() -> dict:
    return {k: str(v) for k, v in yaml.safe_load(WORKFLOW.read_text())["env"].items()}


def test_the_recipe_runs_the_lab_with_no_expressions_in_its_shell_lines():
    steps = _steps()
    shell = [s for s in steps if "run" in s]
    assert all("${{" not in s["run"] for s in shell)  # runnable as they are, here too
    names = [s.get("name") for s in steps]
    for name in ("Measure", "Gate against the baseline", "Keep this run as the branch's baseline",
                 "Upload the run folder", "Restore the baseline", "Store the baseline"):
        assert name in names
    gate = next(s for s in steps if s.get("name") == "Gate against the baseline")["run"]
    assert '--markdown "$GITHUB_STEP_SUMMARY"' in gate
    assert "--processes" in _workflow_env()["LAB_ARGS"]  # the gate needs several per run


def _runs_on(step: dict, event: str) -> bool:
    condition = step.get("if")
    if condition is None or condition == "always()":
        return True
    assert condition.startswith("github.event_name == "), condition  # all the recipe uses
    return condition.split("==")[1].strip().strip("'\"") == event


def _busy_cleared(folder: Path) -> None:
    for path in folder.glob("*/*/results.json"):
        clear_busy(path)


def _run_event(event: str, workspace: Path, summary: Path, after_measure=None) -> list[tuple]:
    """The recipe's shell steps for one event, as GitHub runs them (bash -eo pipefail); steps
    after a failed one are skipped unless they say always()."""
    env = {**os.environ, **_workflow_env(), "LAB_ARGS": SMALL,
           "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_EVENT_NAME": event,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    done, failed = [], False
    for step in _steps():
        if "run" not in step or step["name"] == "Install the lab" or not _runs_on(step, event):
            continue
        if failed and step.get("if") != "always()":
            continue
        result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                                 step["run"]], cwd=workspace, env=env, capture_output=True,
                                text=True, timeout=600)
        done.append((step["name"], result.returncode, result.stderr))
        failed = failed or result.returncode != 0
        if step["name"] == "Measure" and after_measure:
            after_measure()
    return done


@pytest.mark.slow
def test_a_push_keeps_a_baseline_and_a_pull_request_is_gated_against_it(tmp_path):
    summary = tmp_path / "summary.md"
    push = _run_event("push", tmp_path, summary,
                      after_measure=lambda: _busy_cleared(tmp_path / "perf-run"))
    assert [(name, rc) for name, rc, _ in push] == [
        ("Measure", 0), ("Gate against the baseline", 0),
        ("Keep this run as the branch's baseline", 0)], push
    assert "No baseline stored for this branch yet" in summary.read_text()
    assert len(list((tmp_path / "perf-baseline").glob("*/*/results.json"))) == 1

    pull = _run_event("pull_request", tmp_path, summary,
                      after_measure=lambda: _busy_cleared(tmp_path / "perf-run"))
    assert [name for name, _, _ in pull] == ["Measure", "Gate against the baseline"], pull
    gate_rc, gate_err = pull[1][1], pull[1][2]
    assert gate_rc in (0, 1), gate_err  # a verdict, not unusable runs
    text = summary.read_text()
    assert text.count("## lab gate:") == 1 and "No baseline stored" in text  # appended
    assert "mlp[torch-eager|infer|cpu|fp32|batch=32]".replace("|", "\\|") in text  # a table
    assert len(list((tmp_path / "perf-run").glob("*/*/results.json"))) == 1  # uploaded as is
