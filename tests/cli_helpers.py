"""What the end-to-end tests of the command line share: `lab` run in a process of its own as a
user runs it, the one-line refusal a user sees, a user's workload file, the stored run, and a
model whose forward sleeps (a cell still running when a signal lands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lab(*args: str, timeout: float = 240, env: dict | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`lab ARGS` in a process of its own, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or ROOT,
                          env={**os.environ, **(env or {})})


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The refusal a user sees: exit 2, one line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: error: "), proc.stderr
    return lines[0]


def factory(tmp_path: Path, name: str, body: str) -> str:
    """A user's workload file `name.py` (torch and nn imported) -> its `path:make`."""
    path = tmp_path / f"{name}.py"
    path.write_text("import torch\nimport torch.nn as nn\n\n" + textwrap.dedent(body))
    return f"{path}:make"


def slow_factory(tmp_path: Path, seconds: float, name: str = "slow") -> str:
    """A small linear model whose forward sleeps `seconds`: a signal sent while its cell is
    timed lands in a running cell."""
    return factory(tmp_path, name, f"""
        import time
        class Slow(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)
            def forward(self, x):
                time.sleep({seconds})
                return self.fc(x)
        def make():
            return Slow(), torch.randn(2, 4)
        """)


def stored_run(out: Path) -> tuple[Path, dict]:
    """The one run folder under `out` and its results."""
    [path] = list(out.glob("*/*/results.json"))
    return path.parent, json.loads(path.read_text())
