"""The architecture shows in the imports: data flows one way, and nothing downstream reaches
back upstream. Every module of `lab` sits in a layer; a module may import its own layer and the
ones below, never above, and no two modules may import each other in a circle (imports inside
functions count too: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

LAB = Path(__file__).resolve().parent.parent / "lab"

# lowest first; a name covers the module and everything under it
LAYERS = [
    # no framework, no lab module above: statistics, storage, the cell's contract, kernels
    ("lab.core.status", "lab.core.errors", "lab.core.stats", "lab.cell.nvtx", "lab.cell.measure", "lab.store.folders",
     "lab.store.reader", "lab.store.outputs", "lab.profiling.hotkernels", "lab.cell.accuracy", "lab.cell.spec", "lab.kernels",
     "lab.running.machine_load", "lab.core.precision", "lab.cell.memory", "lab.store.identity"),
    ("lab.workloads", "lab.compile.protocol"),  # what is measured
    ("lab.compile",),  # how a workload becomes timed steps in each framework
    # one cell inside its process; claim files; what a selection can run
    ("lab.cell.main", "lab.cell.trace", "lab.judge.claims", "lab.running.selection"),
    ("lab.cell.launch", "lab.running.writer"),  # the cell process launched, its outcome recorded
    ("lab.profiling.trace_pass",),  # a cell traced in a pass of its own
    ("lab.running.executors", "lab.judge.verdict", "lab.judge.gate", "lab.judge.history", "lab.judge.diff", "lab.reports.rows", "lab.reports.terminal",
     "lab.reports.markdown", "lab.reports.html", "lab.reports.csv_export"),  # where cells run; what is read from stored runs
    ("lab.running.loop",),  # the one run loop
    ("lab.commands", "lab.api"),  # the commands and the Python API
    ("lab.cli", "lab"),  # the top floor: nothing imports it (`lab` alone: the package itself)
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
    best, depth = None, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            covers = module == name or (name != "lab" and module.startswith(name + "."))
            if covers and len(name) > depth:
                best, depth = i, len(name)
    assert best is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return best


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
    (fake / "sub").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "stats.py").write_text("from lab import cli\n")
    (fake / "cli.py").write_text("def f():\n    from lab import stats\n")
    (fake / "sub" / "__init__.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "LAB", fake)
    graph = _imports(_modules())
    assert graph["lab.core.stats"] == {"lab.cli"} and graph["lab.cli"] == {"lab.core.stats"}
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
