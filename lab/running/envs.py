"""Framework environments as an axis of a run: `lab run --env NAME=PYTHON` (repeatable) runs
every cell of the selection under each named interpreter, so one run measures the same model
under two framework versions ("is the torch upgrade safe for my model?"), and `lab gate RUN
--env old,new` compares them (docs/upgrades.md).

An environment is an interpreter that has the frameworks (a virtual environment's
`bin/python`). Its cell processes are started with it; the lab itself is put on their path as
for any cell (lab.cell.launch). What an environment holds is never assumed from its name: each
interpreter is asked, before any cell runs, for its Python and package versions (stored in the
run's fingerprint under `envs`), and each cell process reports the versions it imported
(stored in the cell's `versions`).

Refused before anything is written (UsageError, exit 2): a malformed `--env`, a name given
twice, an interpreter that does not exist or does not run, one without a framework the selected
backends need, or one that cannot import the lab's cell process (its own dependencies:
numpy, scipy, ...).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import lab
from lab.compile import FRAMEWORK_PACKAGE, BackendChoice
from lab.core.errors import UsageError
from lab.running import envbuild
from lab.store import envs as naming
from lab.store import provenance

PROBE_TIMEOUT_S = 120.0  # a cold interpreter on a loaded machine importing numpy and scipy

# run by each environment's interpreter: which of the needed modules it lacks (found without
# importing them: importing torch takes seconds), its Python, every installed distribution's
# version, and whether the lab's cell process imports there (lab is on its path, as in a cell)
_PROBE = r"""
import importlib.metadata, importlib.util, json, platform, sys
needed = json.loads(sys.argv[1])
out = {"python_version": platform.python_version(), "executable": sys.executable,
       "missing": [m for m in needed if importlib.util.find_spec(m) is None],
       "packages": {}, "lab_import_error": None}
for dist in importlib.metadata.distributions():
    name = dist.metadata["Name"]
    if name:
        out["packages"].setdefault(name.lower().replace("_", "-"), dist.version)
if not out["missing"]:
    try:
        import lab.cell.main  # noqa: F401
    except Exception as exc:
        out["lab_import_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Env:
    """One `--env NAME=PYTHON`: its name, its interpreter (absolute, links kept: a virtual
    environment's python is a link whose own path selects the environment) and what it holds."""

    name: str
    python: str
    python_version: str
    packages: dict  # distribution name (lower case, '-') -> version

    def spec_entry(self, read_back: list[str]) -> dict:
        """What a cell of this environment carries in its spec (lab.cell.spec.CellSpec.env):
        the interpreter its processes run, and the packages whose versions it reports."""
        return {"name": self.name, "python": self.python, "packages": list(read_back)}

    def fingerprint(self) -> dict:
        return {"python": self.python, "python_version": self.python_version,
                "packages": dict(sorted(self.packages.items()))}


@dataclass(frozen=True)
class EnvChoice(BackendChoice):
    """A backend choice run under an environment: its label names the environment
    (`torch-eager@old`), so its benchmark key does too (lab.store.envs)."""

    env: str = ""  # the environment's name: two environments' choices are not equal
    environment: Env | None = field(default=None, compare=False)  # what it holds

    @property
    def label(self) -> str:
        return naming.label(super().label, self.env)


def parse(items: list[str]) -> list[tuple[str, str]]:
    """`NAME=PYTHON` strings -> (name, interpreter path), checked: the form, the name, a name
    given twice, and that the interpreter is an executable file (a bare command is looked up on
    PATH). The path is made absolute without following links. `NAME=pip:REQ ...`: the
    interpreter of an environment the lab builds from those requirements (lab.running.envbuild)."""
    seen, out = set(), []
    for item in items:
        name, sep, python = item.partition("=")
        if not sep or not name or not python:
            raise UsageError(f"--env expects NAME=PYTHON (a name and an interpreter), "
                             f"got {item!r}")
        naming.check_name(name)
        if name in seen:
            raise UsageError(f"--env names {name!r} twice")
        seen.add(name)
        if python.startswith(envbuild.PREFIX):  # built from pip requirements, cached
            python = envbuild.interpreter(name, python)
        if os.sep not in python:
            found = shutil.which(python)
            if found is None:
                raise UsageError(f"--env {item}: no interpreter {python!r} on PATH")
            python = found
        path = Path(python).expanduser()
        path = path if path.is_absolute() else Path.cwd() / path
        if not path.exists():
            raise UsageError(f"--env {item}: no such interpreter: {path}")
        if not path.is_file() or not os.access(path, os.X_OK):
            raise UsageError(f"--env {item}: {path} is not an executable file")
        out.append((name, os.path.normpath(str(path))))
    return out


def needed_modules(choices: list[BackendChoice]) -> list[str]:
    """The modules the selected backends import: their frameworks and what they require."""
    needed = []
    for choice in choices:
        for module in (FRAMEWORK_PACKAGE[choice.info.framework], *choice.info.requires):
            if module not in needed:
                needed.append(module)
    return needed


@functools.lru_cache(maxsize=32)
def _probe(python: str, needed: tuple[str, ...]) -> dict:
    repo_root = str(Path(lab.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run([python, "-c", _PROBE, json.dumps(list(needed))], env=env,
                              capture_output=True, text=True, errors="replace",
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"did not answer within {PROBE_TIMEOUT_S:.0f} s"}
    except OSError as exc:
        return {"error": f"cannot run it: {exc.strerror or exc}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"is not a Python interpreter the lab can use (exit "
                         f"{proc.returncode}: {last})"[:300]}


def resolve(items: list[str], choices: list[BackendChoice]) -> list[Env]:
    """The environments `--env` names, each interpreter asked what it holds; UsageError when
    one lacks a framework (or a module) the selected backends need, or cannot run the lab."""
    needed = needed_modules(choices)
    out = []
    for name, python in parse(items):
        found = _probe(python, tuple(needed))
        where = f"--env {name}={python}"
        if "error" in found:
            raise UsageError(f"{where}: {found['error']}")
        if found["missing"]:
            users = [c.label for c in choices
                     if {FRAMEWORK_PACKAGE[c.info.framework], *c.info.requires}
                     & set(found["missing"])]
            raise UsageError(f"{where}: {' and '.join(found['missing'])} not installed in "
                             f"that interpreter ({', '.join(users)} need it)")
        if found["lab_import_error"]:
            raise UsageError(f"{where}: the lab's cell process does not import there "
                             f"({found['lab_import_error']}); install the lab's dependencies "
                             f"in that environment")
        out.append(Env(name, python, found["python_version"], found["packages"]))
    return out


def read_back(envs: list[Env]) -> list[str]:
    """The packages each cell process reports the version of: the lab's frameworks
    (lab.store.provenance.PACKAGES) and every package whose version differs between the
    environments (what the run compares, whatever it is: torch, transformers, numpy, ...)."""
    names = {p.lower() for p in provenance.PACKAGES}
    every = set().union(*(e.packages for e in envs)) if envs else set()
    differing = {p for p in every if len({e.packages.get(p) for e in envs}) > 1}
    return sorted((names & every) | differing)


def fingerprint(choices) -> dict:
    """The run fingerprint's `envs`, from the planned cells' backend choices: each
    environment's interpreter and what it holds."""
    return {c.environment.name: c.environment.fingerprint() for c in choices
            if isinstance(c, EnvChoice) and c.environment is not None}
