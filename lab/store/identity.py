"""Stable benchmark identity: the key under which a benchmark is gated, diffed and charted.

A benchmark's key is `workload[backend|mode|device|precision|shape]`, the name `lab run`
stores. The key must not change with lab versions, or with how a user typed a path, since a
baseline stored a week ago, or in another CI workspace, has to meet today's run under the same
key. Two rules give that (docs/verdicts.md, "Benchmark identity"):

- names stored by older versions are read through `OLD_PRECISION`: before precisions existed
  the fourth field named the storage dtype (`float32`), which is the precision that stores and
  computes in it (`fp32`); a shape's keys are put in sorted order; a user's file stored by its
  absolute path (versions before keys) is keyed as a run names it now when the file is here,
  a relative one loses its `./`;
- a user workload (`path/to/file.py:factory`) is keyed by the name its file declares
  (`LAB_NAME = "my-net"` at module level, read without running the file) or else by the file's
  path relative to its git root (relative to the current folder outside git, absolute when
  outside both), never by the path as typed.
"""

from __future__ import annotations

import ast
import functools
import posixpath
import re
from pathlib import Path

from lab.core.errors import UsageError
from lab.core.precision import DTYPE_PRECISION

# the dtype names stored by versions before --precision -> the precision they meant
OLD_PRECISION = {dtype: p.value for dtype, p in DTYPE_PRECISION.items()}
DECLARED = "LAB_NAME"  # a user file's module-level name for its workloads
_VALID_DECLARED = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NAME = re.compile(r"^(?P<workload>[^\[]+)\[(?P<fields>[^\[\]]*)\]$")


def is_user(workload: str) -> bool:
    """`file.py:factory` (what lab.workloads calls a user workload), not a built-in name."""
    return ":" in workload or workload.endswith(".py")


def _git_root(folder: Path) -> Path | None:
    for parent in (folder, *folder.parents):
        if (parent / ".git").exists():  # a folder, or a file in worktrees and submodules
            return parent
    return None


def _declared_name(path: Path) -> str | None:
    """`LAB_NAME = "..."` at the file's top level, read from its syntax tree: the lab never
    runs a user's file in its own process."""
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None  # a missing or broken file is refused later, with its own message
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == DECLARED for t in node.targets):
            value = node.value.value if isinstance(node.value, ast.Constant) else None
            if not isinstance(value, str) or not _VALID_DECLARED.fullmatch(value):
                raise UsageError(f"{path.name}: {DECLARED} must be a string of letters, digits, "
                                 f"'_', '.' or '-', got {ast.unparse(node.value)}")
            return value
    return None


@functools.lru_cache(maxsize=256)
def _user_key(workload: str, cwd: str) -> str:
    path_text, _, factory = workload.rpartition(":")
    if not path_text:  # `file.py` with no factory: refused by lab.workloads, keep as typed
        return workload
    path = (Path(cwd) / path_text).resolve()
    declared = _declared_name(path) if path.is_file() else None
    if declared:
        return f"{declared}:{factory}"
    for base in (_git_root(path.parent), Path(cwd).resolve()):
        if base is not None and path.is_relative_to(base):
            return f"{path.relative_to(base).as_posix()}:{factory}"
    return f"{path.as_posix()}:{factory}"


def workload_key(workload: str) -> str:
    """A workload's part of the key: built-in names as they are; a user's file by its declared
    name or its path from its git root, however the path was typed."""
    return _user_key(workload, str(Path.cwd())) if is_user(workload) else workload


def canonical(name: str) -> str:
    """A stored benchmark name -> its key today. Names of this version are returned as they
    are; older ones through OLD_PRECISION; a name not of the lab's form is left alone."""
    match = _NAME.match(name)
    if not match:
        return name
    fields = match["fields"].split("|")
    if len(fields) != 5:
        return name
    backend, mode, device, precision, shape = fields
    precision = OLD_PRECISION.get(precision, precision)
    shape = ",".join(sorted(shape.split(","))) if shape else shape
    workload = match["workload"]
    if is_user(workload):  # a path stored as typed: './m.py' and 'm.py' are one file
        path, _, factory = workload.rpartition(":")
        if path and posixpath.isabs(path) and Path(path).is_file():
            workload = workload_key(workload)  # the file is here: its key, as a run now names it
        elif path:
            workload = f"{posixpath.normpath(path)}:{factory}"
    return f"{workload}[{backend}|{mode}|{device}|{precision}|{shape}]"


# MemTotal moves by tenths of a GiB between boots of one kind of machine (the kernel's own
# reservations: 23.5 and 23.6 GiB on this project's 2-core Xeon); a different kind of machine
# differs by far more
MEMORY_TOLERANCE = 0.05


def hardware_differences(a: dict, b: dict) -> list[str]:
    """What tells two machines' hardware (lab.store.provenance.hardware) apart, one `key: a vs
    b` each; empty for the same kind of machine. Memory counts only beyond MEMORY_TOLERANCE."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if key == "memory_gib" and isinstance(x, int | float) and isinstance(y, int | float) \
                and abs(x - y) <= MEMORY_TOLERANCE * max(x, y):
            continue
        if x != y:
            out.append(f"{key}: {x!r} vs {y!r}")
    return out
