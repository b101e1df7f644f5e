"""Bad input: one clear line on stderr, exit 2, and nothing written that looks like a result."""

import pytest
from conftest import run_lab

BAD_RUNS = [
    (["--workload", "nope"], "unknown workload 'nope'; valid: mlp, transformer"),
    (["--workload", "mlp", "--backend", "torch-fast"], "unknown backend 'torch-fast'; valid:"),
    (["--workload", "mlp", "--backend", "torch-compile:turbo"], "valid options: default"),
    (["--workload", "missing_file.py:make"], "workload file not found: missing_file.py"),
    (["--workload", "{raising}:make"], "raised RuntimeError: no weights here"),
    (["--workload", "{raising}:absent"], "has no callable 'absent'"),
    (["--workload", "mlp", "--device", "cuda"], "no CUDA device"),
    (["--workload", "mlp", "--repeats", "many"], "expected a positive integer, got 'many'"),
    (["--workload", "mlp", "--repeats", "0"], "expected a positive integer"),
    (["--workload", "mlp", "--mode", "serve"], "unknown mode 'serve'"),
    (["--workload", "mlp", "--shape", "depth=3"], "has no shape parameter 'depth'"),
]


@pytest.mark.parametrize("args, message", BAD_RUNS, ids=[m[:30] for _, m in BAD_RUNS])
def test_bad_run_input_is_one_line_and_exit_2(tmp_path, args, message):
    raising = tmp_path / "raising.py"
    raising.write_text("def make():\n    raise RuntimeError('no weights here')\n")
    args = [a.format(raising=raising) for a in args]
    out = tmp_path / "runs"
    result = run_lab("run", *args, "--out", str(out))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: error:"), result.stderr
    assert message in lines[0]
    assert not out.exists()  # nothing that looks like a result


def test_show_of_a_missing_run_is_exit_2(tmp_path):
    result = run_lab("show", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "no run at" in result.stderr


def test_show_of_a_truncated_run_is_exit_2(tmp_path):
    (tmp_path / "results.json").write_text('{"machine_info": {}, "benchm')
    result = run_lab("show", str(tmp_path))
    assert result.returncode == 2 and "not valid JSON" in result.stderr


def test_list_names_workloads_backends_and_devices():
    result = run_lab("list")
    assert result.returncode == 0, result.stderr
    for word in ("mlp", "transformer", "torch-compile", "max-autotune", "jax-jit", "devices: cpu"):
        assert word in result.stdout
