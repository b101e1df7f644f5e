"""Framework environments as an axis (`lab run --env NAME=PYTHON`, `lab gate RUN --env A,B`;
docs/upgrades.md).

The environments here are built in a fraction of a second: a virtual environment without pip
whose site-packages holds a small package of its own (`labfakefw`, versions 1.0 and 2.0) and a
`.pth` line that puts the test interpreter's own packages (torch, numpy, ...) after it. What
the version changes is the user model's work: 2.0 adds layers, a planted slowdown that the
gate between the two environments must call regressed, while two environments holding the
same version must not be.
"""

from __future__ import annotations

import json
import shutil
import site
import sys
import textwrap
import venv
from pathlib import Path

import pytest
from verdict_helpers import cell, samples, write_run

from lab import cli
from lab.cell import main as cell_main
from lab.core.errors import UsageError
from lab.judge import upgrade
from lab.running import envs
from lab.store import envs as naming

SELECTION = ["run", "--workload", "mlp", "--backend", "torch-eager", "--device", "cpu",
             "--threads", "1", "--repeats", "3"]
FAKE = "labfakefw"


def make_env(root: Path, name: str, fake_version: str | None = None,
             with_packages: bool = True) -> str:
    """A virtual environment (no pip: made in milliseconds) at root/name; `fake_version`:
    it holds labfakefw of that version; `with_packages`: the test interpreter's packages
    (torch, ...) come after its own. Returns its interpreter."""
    folder = root / name
    venv.EnvBuilder(with_pip=False, symlinks=True).create(folder)
    packages = folder / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" \
        / "site-packages"
    if with_packages:
        (packages / "_test_base.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    if fake_version:
        module = packages / FAKE
        module.mkdir()
        # 2.0 adds two layers to the model: more work per step, as a slower release would
        extra = 2 if fake_version.startswith("2") else 0
        (module / "__init__.py").write_text(f"__version__ = {fake_version!r}\n"
                                            f"EXTRA_LAYERS = {extra}\n")
        info = packages / f"{FAKE}-{fake_version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {FAKE}\n"
                                       f"Version: {fake_version}\n")
    return str(folder / "bin" / "python")


def refused(capsys, *args: str) -> str:
    code = cli.main(list(args))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: error: "), err
    return lines[0]


# ------------------------------------------------------------------ bad input, nothing written


def test_env_refusals_write_nothing(tmp_path, capsys):
    out = tmp_path / "profiles"
    bare = make_env(tmp_path, "bare", with_packages=False)  # a Python without torch
    here = sys.executable
    cases = {
        "no such interpreter": ["--env", f"old={tmp_path}/nope/bin/python"],
        "names 'a' twice": ["--env", f"a={here}", "--env", f"a={here}"],
        "expects NAME=PYTHON": ["--env", "justapython"],
        "an environment's name": ["--env", f"a|b={here}"],
        "torch not installed in that interpreter (torch-eager need it)":
            ["--env", f"old={here}", "--env", f"new={bare}"],
        "is not a Python interpreter the lab can use": ["--env", f"old={shutil.which('true')}"],
        "is not an executable file": ["--env", f"old={tmp_path}"],
        "--env with --ranks": ["--env", f"old={here}", "--mode", "train", "--ranks", "2"],
    }
    for expected, flags in cases.items():
        line = refused(capsys, *SELECTION, "--out", str(out), *flags)
        assert expected in line, line
    import lab  # the Python API refuses the same way

    with pytest.raises(UsageError, match="torch not installed"):
        lab.run("mlp", "torch-eager", device="cpu", envs=[f"new={bare}"], out=str(out))
    assert not out.exists()


def test_env_interpreter_is_kept_as_given_not_resolved(tmp_path):
    """A virtual environment's python is a link to the base interpreter: following it would
    run the base, without the environment's packages."""
    python = make_env(tmp_path, "v", "1.0")
    [(name, path)] = envs.parse([f"v={python}"])
    assert (name, path) == ("v", python) and Path(path).is_symlink()


# ------------------------------------------------------------------ what an environment holds


def test_each_environment_is_asked_what_it_holds(tmp_path):
    old, new = make_env(tmp_path, "old", "1.0"), make_env(tmp_path, "new", "2.0")
    choices = [__import__("lab.compile", fromlist=["resolve"]).resolve("torch-eager")]
    found = envs.resolve([f"old={old}", f"new={new}"], choices)
    assert [(e.name, e.packages[FAKE]) for e in found] == [("old", "1.0"), ("new", "2.0")]
    assert found[0].packages["torch"] == found[1].packages["torch"]  # shared, not shadowed
    read = envs.read_back(found)
    assert FAKE in read and "torch" in read  # what differs, and the frameworks


def test_a_cell_process_reads_its_versions_back_from_its_own_imports(tmp_path, monkeypatch):
    make_env(tmp_path, "new", "2.0")
    packages = next((tmp_path / "new").glob("lib/python*/site-packages"))
    monkeypatch.syspath_prepend(str(packages))
    got = cell_main.read_back_versions([FAKE, "surely-not-installed"])
    assert got[FAKE] == "2.0" and got["surely-not-installed"] is None
    assert got["python"] == ".".join(map(str, sys.version_info[:3]))


def make_wheel(folder: Path, version: str) -> Path:
    """A pure-Python wheel of labfakefw, written by hand (pip installs it without an index)."""
    import zipfile

    wheel = folder / f"{FAKE}-{version}-py3-none-any.whl"
    info = f"{FAKE}-{version}.dist-info"
    files = {f"{FAKE}/__init__.py": f"__version__ = {version!r}\nEXTRA_LAYERS = 0\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {FAKE}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                             "Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return wheel


def test_pip_requirements_must_name_something(tmp_path, capsys):
    out = tmp_path / "profiles"
    line = refused(capsys, *SELECTION, "--out", str(out), "--env", "new=pip:")
    assert "name what pip installs" in line and not out.exists()


@pytest.mark.long  # two pip runs: 10 s on the loaded 2-core machine
def test_an_environment_built_from_pip_requirements_is_cached(tmp_path, monkeypatch, capsys):
    from lab.compile import resolve as backend
    from lab.running import envbuild

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    wheel = make_wheel(tmp_path, "3.0")
    told = []
    python = envbuild.interpreter("new", f"pip:{wheel}", say=told.append)
    [found] = envs.resolve([f"new={python}"], [backend("torch-eager")])
    assert found.packages[FAKE] == "3.0" and "torch" in found.packages  # its own, and the lab's
    assert len(told) == 1 and envbuild.interpreter("new", f"pip:{wheel}", told.append) == python
    assert len(told) == 1  # the second time from the cache, nothing built
    out = tmp_path / "profiles"
    code = cli.main([*SELECTION, "--out", str(out), "--env",
                     f"new=pip:{tmp_path}/{FAKE}-1.1-py3-none-any.whl"])  # no such file
    notice, line = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and notice.startswith("lab: building environment new: pip install")
    assert line.startswith("lab: error: --env new=pip:") and "pip install failed" in line
    assert not out.exists()
    assert [p.name for p in envbuild.cache_root().iterdir()] == [Path(python).parent.parent.name]


# ------------------------------------------------------------------ keys


def test_an_environment_is_part_of_the_key_and_comes_off_for_the_gate():
    name = f"mlp[{naming.label('torch-compile:max-autotune', 'new')}|infer|cpu|fp32|batch=32]"
    assert name == "mlp[torch-compile:max-autotune@new|infer|cpu|fp32|batch=32]"
    assert naming.strip(name, "new") == "mlp[torch-compile:max-autotune|infer|cpu|fp32|batch=32]"
    assert naming.strip(name, "old") == name  # another environment's key is left alone
    with pytest.raises(UsageError):
        upgrade.parse_envs("old")
    with pytest.raises(UsageError):
        upgrade.parse_envs("old,old")


# ------------------------------------------------------------------ the gate between two


def env_cell(env: str, median_s: float, seed: int, version: str, counts: float | None = None,
             busy: bool = False) -> dict:
    """A stored cell of `env`: five process medians around median_s, the versions its
    process read back, counts per step where given."""
    medians = samples(median_s, n=5, spread=0.01, seed=seed)
    return cell("mlp", f"torch-eager@{env}", "infer", samples(median_s, seed=seed),
                env=env, python=f"/envs/{env}/bin/python", threads=1,
                versions={"torch": "2.13.0+cpu", FAKE: version, "python": "3.11.7"},
                processes=5, process_medians_s=medians, machine_busy=busy,
                **({"counts": {"status": "ok", "ir_per_step": counts,
                               "cycles_per_step": 1.5 * counts}} if counts else {}))


def test_gate_between_two_environments_of_one_run(tmp_path, capsys):
    run = write_run(tmp_path / "run", [
        env_cell("old", 1e-3, 0, "1.0"), env_cell("same", 1e-3, 1, "1.0"),
        env_cell("new", 1.5e-3, 2, "2.0")])  # the planted slowdown: 1.5x per step
    assert cli.main(["gate", str(run), "--env", "old,new"]) == 1
    text = capsys.readouterr().out
    assert "| regressed |" in text and f"versions {FAKE} 1.0 -> 2.0" in text
    assert "`mlp[torch-eager\\|infer" in text  # one key for both sides, the env taken off
    assert "(env old)" in text and "(env new)" in text
    # A/A; the synthetic processes spread 1%, and the floor says so (the default floor is a
    # shared machine's, under which five processes cannot show "unchanged" within 5%)
    assert cli.main(["gate", str(run), "--env", "old,same", "--noise-floor", "0.01"]) == 0
    text = capsys.readouterr().out
    assert "| unchanged |" in text and "no package version differs" in text
    assert "has no cell of environment 'nope' (its environments: old, same, new)" in \
        refused(capsys, "gate", str(run), "--env", "old,nope")
    assert "needs a candidate run, or --env OLD,NEW" in refused(capsys, "gate", str(run))


def test_gate_between_environments_decides_on_counts_on_a_busy_machine(tmp_path, capsys):
    """Counts move with the work, not with the neighbours: busy cells still decide."""
    run = write_run(tmp_path / "run", [
        env_cell("old", 1e-3, 0, "1.0", counts=1.000e6, busy=True),
        env_cell("same", 1e-3, 1, "1.0", counts=1.001e6, busy=True),
        env_cell("new", 1e-3, 2, "2.0", counts=1.020e6, busy=True)])  # 2% more instructions
    assert cli.main(["gate", str(run), "--env", "old,new", "--json"]) == 1
    [row] = json.loads(capsys.readouterr().out)["verdicts"]
    assert (row["verdict"], row["decided_by"]) == ("regressed", "counts")
    assert cli.main(["gate", str(run), "--env", "old,same", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["verdicts"]
    assert (row["verdict"], row["decided_by"]) == ("unchanged", "counts")


def test_gate_between_two_runs_of_one_environment_each(tmp_path, capsys):
    old = write_run(tmp_path / "a", [env_cell("old", 1e-3, 0, "1.0")])
    new = write_run(tmp_path / "b", [env_cell("new", 1.5e-3, 2, "2.0")])
    assert cli.main(["gate", str(old), str(new)]) == 1  # each holds one: those are compared
    assert f"versions {FAKE} 1.0 -> 2.0" in capsys.readouterr().out
    assert cli.main(["gate", str(new), str(new), "--env", "new,old"]) == 2
    capsys.readouterr()


# ------------------------------------------------------------------ end to end


MODEL = """
import torch, torch.nn as nn
import labfakefw

def make():
    torch.manual_seed(0)
    layers = [nn.Linear(64, 64) for _ in range(2 + labfakefw.EXTRA_LAYERS)]
    return nn.Sequential(*layers), torch.randn(8, 64)
"""


@pytest.mark.long
def test_two_environments_in_one_run_gated_against_each_other(tmp_path):
    """One run, three environments (labfakefw 1.0, 1.0 again, 2.0), counted under callgrind:
    each cell names its own version, and the gate calls 1.0 -> 2.0 regressed on counts, and
    1.0 -> 1.0 not."""
    from lab.profiling.counts_pass import unavailable

    if unavailable():
        pytest.skip(f"counts: {unavailable()}")
    model = tmp_path / "model.py"
    model.write_text(textwrap.dedent(MODEL))
    pythons = {name: make_env(tmp_path, name, version)
               for name, version in (("old", "1.0"), ("same", "1.0"), ("new", "2.0"))}
    out = tmp_path / "profiles"
    code = cli.main(["run", "--workload", f"{model}:make", "--backend", "torch-eager",
                     "--device", "cpu", "--threads", "1", "--repeats", "3", "--out", str(out),
                     "--counts", "--counts-steps", "4",
                     *[f"--env={name}={python}" for name, python in pythons.items()]])
    assert code == 0
    [results] = list(out.glob("*/*/results.json"))
    doc = json.loads(results.read_text())
    cells = {b["extra_info"]["env"]: b["extra_info"] for b in doc["benchmarks"]}
    assert {env: c["versions"][FAKE] for env, c in cells.items()} == \
        {"old": "1.0", "same": "1.0", "new": "2.0"}
    assert all(c["counts"]["status"] == "ok" for c in cells.values())
    fingerprint = json.loads((results.parent / "fingerprint.json").read_text())
    assert fingerprint["envs"]["new"]["packages"][FAKE] == "2.0"
    assert cli.main(["gate", str(results), "--env", "old,new"]) == 1
    assert cli.main(["gate", str(results), "--env", "old,same"]) == 0
