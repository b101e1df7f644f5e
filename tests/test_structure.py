"""Rules of the code that no import check sees: one answer per question, asked in one place."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

LAB = Path(__file__).resolve().parent.parent / "lab"


def _grep(pattern: str, under: Path = LAB, skip: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in sorted(under.rglob("*.py")):
        rel = path.relative_to(LAB.parent).as_posix()
        if rel in skip:
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line):
                found.append(f"{rel}:{no}: {line.strip()}")
    return found


def test_the_cores_this_process_may_use_are_counted_in_one_place():
    found = _grep(r"sched_getaffinity|cpu_count\(\)", skip=("lab/core/cores.py",))
    assert not found, "count cores with lab.core.cores.usable_cores:\n" + "\n".join(found)


def test_the_cores_follow_the_process_affinity():
    """A process allowed one core: the thread default and the fingerprint both say 1."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from lab.running.loop import default_threads; from lab.store import provenance; "
            "print(default_threads(), provenance.hardware()['cpu_count'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=LAB.parent, check=True).stdout
    assert out.split() == ["1", "1"]


def test_no_backend_module_reexports_names_to_fill_the_protocol():
    found = _grep(r"^from lab\..* import .*noqa: F401", under=LAB / "compile")
    assert not found, "name the module built on as BASE instead:\n" + "\n".join(found)


def test_a_runtime_takes_what_it_does_not_define_from_its_base():
    """torchscript defines neither build_task nor versions: the registry finds torch's shared
    runtime's build_task (which refuses train cells) and torch's own versions."""
    from lab.compile import BACKENDS, load
    from lab.compile import torch as torch_backend
    from lab.compile.runtimes import runtime_torch, torchscript

    assert "build_task" not in vars(torchscript) and "versions" not in vars(torchscript)
    module = load(BACKENDS["torchscript"])
    assert module.build_task is runtime_torch.build_task
    assert module.versions is torch_backend.versions
    assert module.SIDES is torchscript.SIDES


def test_a_cell_process_is_pointed_at_the_tree_that_holds_lab(monkeypatch):
    """The launcher finds the tree by the package, not by its own depth in it (a module moved
    one folder down once pointed cell processes at lab/ itself)."""
    from lab.cell.launch import cell_env
    from lab.cell.spec import CellSpec

    monkeypatch.delenv("PYTHONPATH", raising=False)
    spec = CellSpec(workload="mlp", backend="torch-eager", option=None, mode="infer", shape={},
                    precision="fp32", device="cpu", threads=1, repeats=1)
    first = cell_env(spec)["PYTHONPATH"].split(":")[0]
    assert (Path(first) / "lab" / "__init__.py").is_file(), first


def _module_state(path: Path) -> list[str]:
    """Module-level names bound to a mutable container that a function of the module fills
    (`NAME.update(...)`, `NAME[key] = ...`): state one call leaves for a later one."""
    import ast

    tree = ast.parse(path.read_text())
    mutable = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) and node.value else []
        value = getattr(node, "value", None)
        if isinstance(value, ast.Dict | ast.List | ast.Set) or (
                isinstance(value, ast.Call) and getattr(value.func, "id", "") in
                ("dict", "list", "set")):
            mutable |= {t.id for t in targets if isinstance(t, ast.Name)}
    filled = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    isinstance(node.func.value, ast.Name) and node.func.attr in (
                        "update", "setdefault", "append", "add", "clear", "pop"):
                filled.add(node.func.value.id)
            if isinstance(node, ast.Assign):
                filled |= {t.value.id for t in node.targets if isinstance(t, ast.Subscript)
                           and isinstance(t.value, ast.Name)}
    return sorted(mutable & filled)


def test_no_backend_module_keeps_precision_or_threads_between_calls():
    """A backend is passed the precision (build_task, apply_precision) and reads the thread
    count back from its framework; nothing is stashed in a module global for a later call."""
    found = [f"{p.relative_to(LAB.parent)}: {', '.join(names)}"
             for p in sorted((LAB / "compile").rglob("*.py")) if (names := _module_state(p))]
    assert not found, "module-level state in lab/compile:\n" + "\n".join(found)


def test_the_state_check_catches_a_stash(tmp_path):
    planted = tmp_path / "backend.py"
    planted.write_text('_PRECISION: dict = {}\n\n\ndef apply_precision(p):\n'
                       '    _PRECISION.update(precision=p)\n')
    assert _module_state(planted) == ["_PRECISION"]
