"""The architecture shows in the tree: each folder of `lab` is a layer, data flows one way, and
nothing downstream reaches back upstream. A module may import its own folder and the folders
below, never above, and no two modules may import each other in a circle (imports inside
functions count too: a lazy import is still a dependency). `lab/` itself holds only the package,
the API, the command line and the layer folders."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

LAB = Path(__file__).resolve().parent.parent / "lab"

# the folders (and the three top-level modules) of lab, lowest first
LAYERS = [
    ("core", "kernels", "workloads", "counts"),  # no framework, no lab folder above: errors,
    # statistics, precisions, statuses; the Triton kernels; what is measured; callgrind's counts
    ("store",),  # stored runs: folders, atomic writes, fingerprint, the one reader
    ("compile",),  # how a workload becomes timed steps in each framework and runtime
    ("cell",),  # one cell: launched by the parent, run in its own process, measured
    ("profiling",),  # a cell traced in a pass of its own; hot-kernel tables, Nsight
    ("distributed",),  # data-parallel cells: N rank processes launched, timed, compared
    ("running",),  # the selection, the one run loop, where cells run, the run writer
    ("judge", "reports"),  # what is read from stored runs: verdicts, the gate; the tables
    ("commands", "api"),  # the commands and the Python API
    ("campaign",),  # the GPU campaign: leases of `lab run --resume` into one run per GPU kind
    ("cli", "__init__"),  # the top floor: nothing imports it (`lab` alone: the package itself)
]


def _modules() -> dict[str, Path]:
    mods = {}
    for path in LAB.rglob("*.py"):
        parts = list(path.relative_to(LAB.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _layer(module: str) -> int:
    """The layer of a module: that of its folder under lab (or of the top-level module)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    where = f"lab/{top}/" if (LAB / top).is_dir() else f"lab/{top}.py"
    raise AssertionError(f"{where} is in no layer: add it to LAYERS in {__file__}")


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph = {m: set() for m in mods}
    for module, path in mods.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                # a package's __init__ importing its own submodules is how packages work
                if name and name != module and not module.startswith(name + ".") and \
                        not (path.name == "__init__.py" and name.startswith(module + ".")):
                    graph[module].add(name)
    return graph


def test_every_import_goes_down_or_sideways():
    graph = _imports(_modules())
    upward = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
              for m, deps in sorted(graph.items()) for d in sorted(deps)
              if _layer(d) > _layer(m)]
    assert not upward, "imports running back up the layers:\n" + "\n".join(upward)


def test_lab_holds_only_the_api_the_cli_and_the_layer_folders():
    named = {n for names in LAYERS for n in names}
    loose = sorted(p.name for p in LAB.iterdir() if p.name != "__pycache__" and (
        (p.suffix == ".py" and p.stem not in named) or (p.is_dir() and p.name not in named)))
    assert not loose, f"lab/ holds what is in no layer (a module belongs in a folder): {loose}"


def test_no_import_circles():
    try:
        tuple(graphlib.TopologicalSorter(_imports(_modules())).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None


def test_nothing_imports_the_cli():
    graph = _imports(_modules())
    assert not [m for m, deps in graph.items() if "lab.cli" in deps]


def test_the_check_catches_an_upward_import_and_a_circle(tmp_path, monkeypatch):
    """The test above can fail: a fake package with both defects is caught."""
    fake = tmp_path / "lab"
    (fake / "core").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "core" / "__init__.py").write_text("")
    (fake / "core" / "stats.py").write_text("from lab import cli\n")
    (fake / "cli.py").write_text("def f():\n    from lab.core import stats\n")
    monkeypatch.setattr(__import__(__name__), "LAB", fake)
    graph = _imports(_modules())
    assert graph["lab.core.stats"] == {"lab.cli"} and "lab.core.stats" in graph["lab.cli"]
    try:
        test_every_import_goes_down_or_sideways()
    except AssertionError as exc:
        assert "lab.core.stats (layer 0) imports lab.cli" in str(exc)
    else:
        raise AssertionError("the upward import was not caught")
    try:
        test_no_import_circles()
    except AssertionError as exc:
        assert "import circle" in str(exc)
    else:
        raise AssertionError("the circle was not caught")


def test_the_check_catches_a_loose_module_and_an_unplaced_folder(tmp_path, monkeypatch):
    """A module dropped at lab/'s top, or a folder no layer names, fails the checks above."""
    fake = tmp_path / "lab"
    (fake / "extras").mkdir(parents=True)
    for path in ("__init__.py", "cli.py", "loose.py", "extras/__init__.py"):
        (fake / path).write_text("")
    monkeypatch.setattr(__import__(__name__), "LAB", fake)
    try:
        test_lab_holds_only_the_api_the_cli_and_the_layer_folders()
    except AssertionError as exc:
        assert "['extras', 'loose.py']" in str(exc)
    else:
        raise AssertionError("the loose module and the unplaced folder were not caught")
    try:
        _layer("lab.extras")
    except AssertionError as exc:
        assert "lab/extras/ is in no layer" in str(exc)
    else:
        raise AssertionError("the unplaced folder has a layer")


def test_the_command_line_loads_no_run_loop_and_no_numpy():
    """`lab --help` and argument errors start fast: parsing imports neither the run loop nor
    numpy (the commands import what they need once chosen)."""
    import subprocess
    import sys

    code = ("import sys, lab.cli; "
            "print(sorted(m for m in ('numpy', 'lab.running.loop') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=LAB.parent, check=True).stdout
    assert out.strip() == "[]", f"importing lab.cli loads {out.strip()}"
