"""The GPU campaign on the CPU (lab/campaign): costs from stored walls, the lease's plan in
value order, packing and unpacking a lease, the generated GPU tables, and the rehearsal: a
campaign stopped at a step budget and run again measures every planned cell exactly once."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import pytest
from conftest import ROOT

from lab.campaign import bundle, costs, gpudocs, lease, plan, stored
from lab.campaign.plan import Item, Step
from lab.core.errors import UsageError
from lab.store import folders as store

H200_HW = {"cpu_model": "x", "cpu_count": 16, "memory_gib": 1, "machine": "x86_64",
           "gpus": [{"name": "NVIDIA H200", "memory": "1 MiB"}]}


def _cell(key, wall, name=None):
    return stored.CellRecord(name or f"{key[0]}[{key[1]}|{key[2]}|x|fp32|]", "ok", wall, "r",
                             key, "x")


def _machines():
    h200 = stored.Machine("nvidia-h200-x1", "NVIDIA H200",
                          [_cell(("mlp", "torch-compile", "infer"), 46.0)])
    cpu = stored.Machine("cpu-2c", None, [_cell(("mlp", "torch-compile", "infer"), 20.0),
                                          _cell(("mlp", "torch-eager", "train"), 3.0)])
    h100 = stored.Machine("nvidia-h100-x1", None)
    return h100, {m.id: m for m in (h200, cpu, h100)}


def test_a_cost_comes_from_the_nearest_stored_figure_and_says_which():
    h100, machines = _machines()
    est = costs.Estimator(h100, machines)
    assert est.launch_note.startswith("allowance")  # no lease measured it: said so
    other = est.cell(Item("a", (), True, ("mlp", "torch-compile", "infer")))
    assert other.seconds == pytest.approx(46.0 * costs.MARGIN) and "nvidia-h200-x1" in \
        other.source
    scaled = est.cell(Item("b", (), True, ("mlp", "torch-eager", "train")))
    assert scaled.seconds == pytest.approx(3.0 * 46.0 / 20.0 * costs.MARGIN)
    assert "CPU figure scaled x2.30" in scaled.source
    cap = est.command(Step("kernels", "", cap_s=90))
    assert cap.seconds == 90 and "fixed cap" in cap.source
    h100.step_walls["kernels"] = [40.0, 60.0]
    assert est.command(Step("kernels", "", cap_s=90)).seconds == pytest.approx(
        50.0 * costs.MARGIN)


def test_a_lease_takes_missing_items_in_value_order_and_leaves_what_does_not_fit():
    h100, machines = _machines()
    h100.cells.append(_cell(("mlp", "torch-eager", "infer"), 1.0, name="done"))
    key = ("mlp", "torch-compile", "infer")  # 46 s x margin + launch: ~58 s each
    steps = [Step("claims", "", [Item("done", (), True, ("mlp", "torch-eager", "infer")),
                                 Item("c1", (), True, key), Item("c2", (), True, key)]),
             Step("suite", "", [Item("s1", (), True, ("mlp", "torch-eager", "train"))])]
    plans = lease.plan_lease(steps, h100, machines, limit_s=80)
    claims, suite = plans
    assert [i.name for i in claims.covered] == ["done"]
    assert [i.name for i, _ in claims.now] == ["c1"]
    assert [i.name for i, _ in claims.later] == ["c2"]  # past the limit: a later lease
    assert [i.name for i, _ in suite.now] == ["s1"]  # a smaller item after it still fits
    assert sum(p.budget_s for p in plans) <= 80


def _stored_run(out, machine, run, started="2026-12-01T00:00:00"):
    folder = out / machine / run
    folder.mkdir(parents=True)
    (folder / store.FINGERPRINT).write_text(json.dumps({"hardware": H200_HW}))
    (folder / "results.json").write_text(json.dumps(
        {"benchmarks": [], "lab": {"run_id": run, "started": started}}))
    return folder


def _lease(out, machine, stamp="20261201-000000"):
    lease_dir = out / machine / f"{stamp}-gpu-campaign"
    lease_dir.mkdir(parents=True)
    (lease_dir / store.FINGERPRINT).write_text(json.dumps({"hardware": H200_HW}))
    (lease_dir / stored.SUMMARY).write_text("[]")
    state = {"machine": machine, "run": "run-a", "done": {},
             "leases": [{"stamp": stamp, "folder": lease_dir.name, "stopped": {}}]}
    (out / machine / stored.STATE).write_text(json.dumps(state))
    return state


def test_a_lease_packs_into_few_files_and_unpacks_into_its_machine_folder(tmp_path):
    gpu, home = tmp_path / "gpu", tmp_path / "home"
    machine = "nvidia-h200-x1"
    for i in range(9):
        _stored_run(gpu, machine, f"run-{chr(97 + i)}")
    state = _lease(gpu, machine)
    files = bundle.pack(gpu, machine, state, tmp_path / "pack")
    assert len(files) <= bundle.MAX_FILES
    said = bundle.unpack(files, home)
    assert any("not a tarball" in s for s in said)  # the summary, there to read
    for i in range(9):
        assert (home / machine / f"run-{chr(97 + i)}" / "results.json").is_file()
    assert json.loads((home / machine / stored.STATE).read_text())["run"] == "run-a"
    assert bundle.unpack(files, home)  # the same runs again: allowed, nothing changes


def _tar_with(tmp_path, name, members: dict) -> object:
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        for arcname, data in members.items():
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_unpack_refuses_escaping_paths_other_machines_and_another_run_writing_nothing(
        tmp_path):
    home = tmp_path / "home"
    fp = json.dumps({"hardware": H200_HW}).encode()
    bad = _tar_with(tmp_path, "escape.tar.gz", {"../../etc/x": b"1"})
    with pytest.raises(UsageError, match="escapes"):
        bundle.unpack([bad], home)
    wrong = _tar_with(tmp_path, "wrong.tar.gz", {"cpu-2c/r/fingerprint.json": fp,
                                                 "cpu-2c/r/results.json": b"{}"})
    with pytest.raises(UsageError, match="measured on nvidia-h200-x1"):
        bundle.unpack([wrong], home)
    _stored_run(home, "nvidia-h200-x1", "r", started="2026-11-01T00:00:00")
    other = json.dumps({"lab": {"run_id": "r", "started": "2026-12-01T00:00:00"}}).encode()
    clash = _tar_with(tmp_path, "clash.tar.gz", {"nvidia-h200-x1/r/fingerprint.json": fp,
                                                 "nvidia-h200-x1/r/results.json": other,
                                                 "nvidia-h200-x1/new/fingerprint.json": fp})
    good = _tar_with(tmp_path, "good.tar.gz", {"nvidia-h200-x1/s/fingerprint.json": fp})
    with pytest.raises(UsageError, match="different run"):
        bundle.unpack([good, clash], home)  # checked all first: the good one is not written
    assert not (home / "nvidia-h200-x1" / "s").exists()
    assert not (home / "nvidia-h200-x1" / "new").exists()


def test_the_gpu_tables_are_generated_from_the_stored_h200_runs(tmp_path):
    doc = tmp_path / "docs" / "gpu.md"
    doc.parent.mkdir()
    doc.write_text((ROOT / "docs" / "gpu.md").read_text())
    text = gpudocs.render(ROOT / "profiles", ROOT)
    assert "| `20261128-052503-cuda` | transformer | torch-compile | infer | float32 |" in text
    assert "1.02x [1.00, 1.04]" in text and "0.57x [0.56, 0.59]" in text
    assert gpudocs.write(ROOT / "profiles", doc) is False  # the committed page is up to date
    doc.write_text(doc.read_text().replace("1.02x [1.00, 1.04]", "9.99x"))  # a hand edit
    assert gpudocs.write(ROOT / "profiles", doc) is True
    assert "9.99x" not in doc.read_text() and "1.02x [1.00, 1.04]" in doc.read_text()


def test_bad_budget_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "bench/gpu_campaign.py", "rehearse", "--out",
                          str(tmp_path / "r"), "--budget", "suite"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["lab: error: --budget expects STEP=SECONDS, "
                                               "got 'suite'"]
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_rehearsal_stopped_at_a_step_budget_then_run_again_measures_each_cell_once(
        tmp_path):
    out = tmp_path / "runs"
    machine = store.machine_id()
    planned = sorted(i.name for s in plan.rehearsal_steps() for i in s.items)

    def lease_run(*extra):
        done = subprocess.run([sys.executable, "bench/gpu_campaign.py", "rehearse", "--out",
                               str(out), *extra], cwd=ROOT, capture_output=True, text=True,
                              timeout=400)
        assert done.returncode == 0, done.stdout + done.stderr
        state = json.loads((out / machine / stored.STATE).read_text())
        summary = json.loads((out / machine / state["leases"][-1]["folder"] /
                              stored.SUMMARY).read_text())
        return state, summary

    state, first = lease_run("--budget", "suite=1")
    assert state["leases"][0]["stopped"]["suite"].startswith("before ")
    ran_first = [e["name"] for e in first if e["kind"] == "cell"]
    assert ran_first and len(ran_first) < len(planned)
    ran = list(ran_first)
    # the next lease runs what the first left; a cell that took longer than its stored cost
    # (a busy machine) may stop a step again at its budget: a third lease then finishes it
    for _ in range(2):
        state, summary = lease_run()
        ran += [e["name"] for e in summary if e["kind"] == "cell"]
        if not state["leases"][-1]["stopped"]:
            break
    assert state["leases"][-1]["stopped"] == {}, state["leases"]
    assert sorted(ran) == planned  # each planned cell run once, none left
    assert sorted(stored.campaign_cells(out, machine)) == planned  # one run, once each
    assert len({json.loads((out / machine / stored.STATE).read_text())["run"]}) == 1


def test_an_item_cut_short_in_a_lease_costs_at_least_what_it_ran():
    h100, machines = _machines()
    h100.cut_short["c1"] = 200.0  # SIGINT after 200 s: the stored figure was too low
    est = costs.Estimator(h100, machines)
    cost = est.item(Step("claims", ""), Item("c1", (), True, ("mlp", "torch-compile", "infer")))
    assert cost.seconds == pytest.approx(200.0 * costs.MARGIN)
    assert "cut short" in cost.source


def test_cells_this_machine_cannot_run_cost_nothing_and_are_listed():
    h100, machines = _machines()
    key = ("mlp", "torch-compile", "infer")
    steps = [Step("suite", "", [Item("tf", (), True, ("mlp", "tf-xla", "infer")),
                                Item("c1", (), True, key)])]
    (suite,) = lease.plan_lease(steps, h100, machines, 80, cannot={"tf": "tensorflow not "
                                                                         "installed"})
    assert [i.name for i, _ in suite.cannot] == ["tf"]
    assert [i.name for i, _ in suite.now] == ["c1"]
    from lab.campaign import execute

    missing = execute.cannot_run_here(plan.rehearsal_steps())
    assert missing == {}  # the rehearsal's eager torch runs wherever the lab does


def test_make_gpu_unpack_refuses_an_escaping_tarball_in_one_line_writing_nothing(tmp_path):
    bad = _tar_with(tmp_path, "escape.tar.gz", {"nvidia-h200-x1/../../x": b"1"})
    out = subprocess.run([sys.executable, "bench/gpu_campaign.py", "unpack", "--out",
                          str(tmp_path / "home"), str(bad)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("lab: error: escape.tar.gz:")
    assert not (tmp_path / "home").exists() and not (tmp_path / "x").exists()
