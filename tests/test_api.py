"""The Python API (lab.api): the same run loop, reader, gate and claim checks as the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import api
from lab.cli import main
from lab.core.errors import UsageError
from lab.store import reader as results

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "profiles/amd-epyc-2c"
CPU_RUN = RUNS / "20261124-212813-cpu"
CHECK_RUN = RUNS / "20261124-214437-check-cpu"
SEED = ROOT / "claims/seed.toml"


def test_the_package_reexports_the_api_lazily():
    import lab

    assert (lab.run, lab.load, lab.check) == (api.run, api.load, api.check)
    with pytest.raises(AttributeError):
        lab.no_such_thing  # noqa: B018


@pytest.mark.slow
def test_a_tiny_run_is_stored_and_loads_back(tmp_path):
    folder = api.run("mlp", backends="torch-eager", repeats=3, device="cpu", threads=1,
                     out=str(tmp_path))
    assert folder.parent.parent == tmp_path and (folder / "results.json").is_file()
    doc = api.load(folder)
    [cell] = results.cells(doc)
    assert (cell["workload"], cell["backend"], cell["mode"], cell["status"]) == (
        "mlp", "torch-eager", "infer", "ok")
    assert len(cell["samples_s"]) == 3 and cell["threads"] == 1
    assert doc["lab"]["complete"] and doc["lab"]["argv"][:3] == ["run", "--workload", "mlp"]
    assert api.load(doc["lab"]["run_id"], out=str(tmp_path)) == doc  # by run id, as the CLI


def test_gate_is_the_document_lab_gate_json_prints(capsys):
    doc = api.gate(CHECK_RUN, CPU_RUN)
    main(["gate", str(CHECK_RUN), str(CPU_RUN), "--json"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(doc))
    assert {v["verdict"] for v in doc["verdicts"]} <= {"regressed", "improved", "unchanged",
                                                       "inconclusive", "missing"}


def test_check_is_the_document_lab_check_json_prints(capsys):
    doc = api.check(SEED, run=CHECK_RUN, stored_only=True)
    main(["check", str(SEED), "--run", str(CHECK_RUN), "--stored-only", "--json"])
    assert json.loads(capsys.readouterr().out) == doc
    assert doc["claims"] and all(c["verdict"] in ("supported", "refuted", "inconclusive")
                                 for c in doc["claims"])


def test_bad_input_raises_the_clis_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no run at"):
        api.load(tmp_path / "nothing")
    with pytest.raises(UsageError, match="unknown mode"):
        api.run("mlp", backends="torch-eager", modes="fly", out=str(tmp_path))
    with pytest.raises(UsageError, match="threshold"):
        api.gate(CHECK_RUN, CPU_RUN, threshold="fast")


def test_the_package_exports_the_api_lazily_even_after_every_module_is_imported():
    """No module of `lab` may shadow an API name: importing a submodule binds its name on the
    package, which would replace the function (this once made `from lab import gate` give the
    gate's statistics module)."""
    import importlib
    import pkgutil

    import lab

    for info in pkgutil.walk_packages(lab.__path__, "lab."):
        if info.name.startswith(("lab.compile.", "lab.kernels", "lab.workloads.llm")):
            continue  # framework-heavy; none is named like the API
        importlib.import_module(info.name)
    from lab import check, gate, load, run

    assert {f.__module__ for f in (run, load, gate, check)} == {"lab.api"}
