"""An environment the lab builds from pip requirements (`lab run --env new=pip:torch==2.14.1`),
cached, so a CI job names the versions it gates instead of building the environment itself.

The environment is a virtual environment of the lab's own base Python, made without pip, into
whose site-packages pip installs the requirements (`pip install --target`: resolved and
installed apart from what the lab's environment holds, with their own dependencies), and a
`.pth` line then puts the lab's own packages after them: only what the requirements change is
installed, everything else (numpy, scipy, the lab's dependencies) comes from the lab's
environment, shadowed by what the new one holds (docs/upgrades.md).

It is cached under `$XDG_CACHE_HOME/perflab/envs/<key>`, the key a hash of the requirements,
the base interpreter and the lab's package folders: the same `--env` a second time costs
nothing. A build is made in a folder of its own and renamed into place when complete, so an
interrupted or failed build leaves no environment that looks usable. A failed pip install is
refused in one line (exit 2) with pip's last line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

from lab.core.errors import UsageError

PREFIX = "pip:"  # `--env NAME=pip:REQ [REQ ...]`
BUILD_TIMEOUT_S = 3600.0  # a CUDA build of torch is gigabytes
READY = "lab-env.json"  # written last: a folder without it is not an environment


def cache_root() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "perflab" / "envs"


def requirements(text: str) -> list[str]:
    """`pip:torch==2.14.1 numpy<2` -> ["torch==2.14.1", "numpy<2"]; UsageError when empty."""
    reqs = text[len(PREFIX):].split()
    if not reqs:
        raise UsageError(f"--env ...={text}: name what pip installs (pip:torch==2.14.1)")
    return reqs


def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def _site_folders() -> list[str]:
    return [p for p in site.getsitepackages() if Path(p).is_dir()]


def interpreter(name: str, text: str, say=None) -> str:
    """The interpreter of the environment `pip:...` describes, built now if not cached."""
    reqs = requirements(text)
    base, folders = _base_python(), _site_folders()
    key = hashlib.sha256(json.dumps([reqs, base, folders]).encode()).hexdigest()[:16]
    target = cache_root() / key
    python = target / "bin" / "python"
    if (target / READY).is_file():
        return str(python)
    say = say or (lambda line: print(f"lab: {line}", file=sys.stderr, flush=True))
    say(f"building environment {name}: pip install {' '.join(reqs)} (cached in {target})")
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f"{key}-build-", dir=target.parent))
    try:
        venv.EnvBuilder(with_pip=False, symlinks=True).create(build)
        packages = next(build.glob("lib/python*/site-packages"))
        # the lab's own pip, with the new environment's folder as the target: the lab's
        # packages are not seen as installed, so each requirement's own dependencies come too
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-input",
                               "--disable-pip-version-check", "--target", str(packages),
                               *reqs], capture_output=True, text=True, errors="replace",
                              timeout=BUILD_TIMEOUT_S)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise UsageError(f"--env {name}={text}: pip install failed: "
                             f"{(lines or ['no message'])[-1].strip()}"[:400])
        # after the install, never before: pip would take the lab's packages as installed
        (packages / "_lab_base.pth").write_text("\n".join(folders) + "\n")
        (build / READY).write_text(json.dumps({"requirements": reqs, "base": base}))
        try:
            os.rename(build, target)  # atomic; another build that finished first wins
        except OSError:
            if not (target / READY).is_file():
                raise
    except subprocess.TimeoutExpired:
        raise UsageError(f"--env {name}={text}: pip install took more than "
                         f"{BUILD_TIMEOUT_S:.0f} s") from None
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return str(python)
