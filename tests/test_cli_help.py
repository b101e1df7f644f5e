"""What the command line says about itself: --help with defaults and an example per command,
--version, the gate's --threshold forms, and a reader that closes stdout early (`| head`)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import pytest
from conftest import ROOT, run_lab

COMMANDS = ("list", "run", "show", "report", "profile", "check", "gate", "history")


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_shows_an_example_and_its_defaults(command):
    done = run_lab(command, "--help")
    assert done.returncode == 0 and done.stderr == ""
    assert "example:\n  lab " + command in done.stdout
    if command in ("run", "profile"):
        assert "(default: torch-eager,torch-compile)" in done.stdout
        assert "(default: auto)" in done.stdout  # --device, which had no help of its own
    if command in ("show", "report", "history", "check"):
        assert "(default: profiles)" in done.stdout


def test_help_names_what_gate_compares_and_the_cold_l2_flush():
    gate = run_lab("gate", "--help").stdout
    assert "the reference run" in gate and "the run under test" in gate
    assert "10%, 10 (a" in gate and "(default: 5%)" in gate
    run = " ".join(run_lab("run", "--help").stdout.split())
    assert "flush the L2 before every timed step" in run and "every sample" not in run


def test_version_is_the_installed_distributions():
    done = run_lab("--version")
    assert done.returncode == 0 and done.stdout == f"lab {metadata.version('perflab')}\n"


@pytest.mark.parametrize("threshold", ["10", "10%", "0.1"])
def test_gate_threshold_takes_a_bare_percentage_too(tmp_path, threshold):
    from verdict_helpers import cell, write_run

    write_run(tmp_path, [cell("mlp", "torch-eager", "infer", [1e-3] * 5)])
    done = run_lab("gate", str(tmp_path), str(tmp_path), "--threshold", threshold, "--json")
    assert done.returncode == 0, done.stderr
    assert '"threshold": 0.1' in done.stdout  # 10, 10% and 0.1 are the same gate


@pytest.mark.parametrize("threshold", ["ten", "5%%", ""])
def test_gate_threshold_junk_is_one_line_and_exit_2(tmp_path, threshold):
    done = run_lab("gate", str(tmp_path), str(tmp_path), "--threshold", threshold)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("lab: error: argument --threshold:")
    assert done.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    """A run whose every output is far larger than a pipe's buffer (64 KiB), so the reader
    closes it while the lab is still writing."""
    from verdict_helpers import cell, write_run

    folder = tmp_path_factory.mktemp("big")
    cells = [cell("mlp", "torch-eager", "infer", [1e-3] * 5)]
    cells += [{**cell("mlp", f"torch-compile:{i}", "infer", None, status="run_error"),
               "name": f"mlp[torch-compile:{i}|infer]"} for i in range(1500)]
    write_run(folder, cells)
    return folder


@pytest.mark.parametrize("argv", [["show", "{run}"], ["report", "{run}"],
                                  ["report", "{run}", "--csv", "-"]])
def test_a_reader_that_closes_stdout_early_is_no_error(big_run, argv):
    """`lab ... | head`: no traceback, no message, the command's own exit code (0 here)."""
    args = [a.replace("{run}", str(big_run)) for a in argv]
    child = subprocess.Popen([sys.executable, "-m", "lab.cli", *args], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout.read(10)
    child.stdout.close()  # the reader goes away, as head does
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 0 and err == ""


# ---------------------------------------------------------------- lab list

def _cached_answers(tmp_path) -> dict:
    """A cache of support answers, as the children would give them, under the key of this
    install: `lab list` must take them from there instead of asking the frameworks."""
    import json

    from lab import compile as backends
    from lab.commands import show

    answers = {name: {"cpu": f"no: cached answer {i}"} for i, name in enumerate(backends.BACKENDS)}
    cache = tmp_path / "perflab" / "list-support.json"
    cache.parent.mkdir(parents=True)
    devices = ["cpu", "cuda"] if show._gpu_driver() else ["cpu"]
    cache.write_text(json.dumps({"key": show._cache_key(devices), "answers": answers}))
    return answers


def test_list_imports_no_framework_and_reads_cached_answers(tmp_path):
    answers = _cached_answers(tmp_path)
    probe = ("import sys; from lab.cli import main; code = main(['list']); "
             "heavy = [m for m in ('torch', 'tensorflow', 'jax', 'triton') if m in sys.modules]; "
             "print('HEAVY', heavy, file=sys.stderr); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=ROOT, timeout=120,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "300"})
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr and "asking" not in done.stderr
    for name, answer in answers.items():
        assert f"cpu: {answer['cpu']}" in done.stdout, name


def test_list_summaries_wrap_at_words_and_are_whole(tmp_path):
    """At any width, every word of every summary is printed whole (never cut mid-word, never a
    first line alone)."""
    from lab import kernels, workloads

    _cached_answers(tmp_path)
    done = run_lab("list", env={"XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "120"})
    assert done.returncode == 0, done.stderr
    printed = done.stdout.replace("│", " ").split()
    summaries = [workloads.get(n).summary for n in workloads.names()]
    summaries += list(kernels.DESCRIPTIONS.values())
    for summary in summaries:
        for word in summary.split():
            assert word in printed, f"{word!r} of {summary!r} is cut"


# ---------------------------------------------------------------- the table's width

@pytest.mark.parametrize("columns, widest", [("100", 100), ("", 200)])
def test_the_run_table_takes_the_width_it_is_given_and_a_wide_one_when_piped(columns, widest):
    """COLUMNS (the terminal's width, or the user's) is honoured; piped with none, the table
    keeps each row on one line up to 200 columns instead of rich's 80."""
    run = ROOT / "profiles/intel-r-xeon-r-processor-2c/20261128-083527-cpu-1558"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns:
        env["COLUMNS"] = columns
    done = subprocess.run([sys.executable, "-m", "lab.cli", "show", str(run)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    width = max(len(line) for line in done.stdout.splitlines())
    assert width <= widest and (width > 100 if not columns else True)
    assert "8,542" in done.stdout  # a number is never folded away
