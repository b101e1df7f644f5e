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
from lab.store import provenance

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
    assert est.launch_note.startswith("no stored measurement")  # nothing measured it: said
    other = est.cell(Item("a", (), True, ("mlp", "torch-compile", "infer")))
    assert other.seconds == pytest.approx(46.0 * costs.MARGIN) and "nvidia-h200-x1" in \
        other.source
    scaled = est.cell(Item("b", (), True, ("mlp", "torch-eager", "train")))
    assert scaled.seconds == pytest.approx(3.0 * 46.0 / 20.0 * costs.MARGIN)
    assert "CPU figure scaled x2.30" in scaled.source
    kernels = Item("kernels", (), False)
    none = est.command(Step("kernels", ""), kernels)
    assert none.seconds == costs.NO_FIGURE_S and "no measurement" in none.source
    h100.step_walls["kernels"] = [40.0, 60.0]
    assert est.command(Step("kernels", ""), kernels).seconds == pytest.approx(
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
    machine = provenance.machine_id()
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


def _fixture_root(tmp_path):
    """A root as profiles/ holds it: the H200's recorded walls with their log lines, one stored
    H200 cell; an H100 with nothing stored yet."""
    h200 = tmp_path / "nvidia-h200-x1"
    _stored_run(tmp_path, "nvidia-h200-x1", "run-a")
    (h200 / stored.RECORDED).write_text(json.dumps({
        "steps": {"cuda-tests": {"wall_s": 20.0, "finished": True, "log": "t.log",
                                 "line": "5 passed in 20.00s"},
                  "kernels": {"wall_s": 50.0, "finished": True, "cases": 25, "log": "k.log",
                              "line": "25 passed in 50.00s"},
                  "profile": {"wall_s": 80.0, "finished": False, "log": "p.log",
                              "line": "interrupted"}},
        "launch": [{"launch_s": 6.0, "log": "r1.log"}, {"launch_s": 4.0, "log": "r2.log"}]}))
    return stored.read_root(tmp_path)


def _command_steps():
    return [Step("cuda-tests", "", [Item("cuda-tests", (), False)]),
            Step("kernels", "", [Item("kernels:a", (), False, cases=4, per_case_of="kernels"),
                                 Item("kernels:b", (), False, cases=2, per_case_of="kernels")]),
            Step("kernel-tests", "", [Item("kernel-tests:x", (), False)]),
            Step("profile", "", [Item("profile", (), False)])]


def test_each_budget_of_a_plan_from_stored_fixtures_shows_its_source_and_a_missing_one_is_named(
        tmp_path):
    machines = _fixture_root(tmp_path)
    h100 = stored.Machine("nvidia-h100-x1", None)
    est = costs.Estimator(h100, machines)
    assert est.launch_s == 5.0 and "r1.log, r2.log" in est.launch_note  # median of 6 and 4
    plans = {p.step.name: p for p in lease.plan_lease(_command_steps(), h100, machines, 3600)}
    tests = plans["cuda-tests"].now[0][1]
    assert tests.seconds == pytest.approx(20.0 * costs.MARGIN)
    assert "t.log: '5 passed in 20.00s'" in tests.source and "nvidia-h200-x1" in tests.source
    (a, cost_a), (b, cost_b) = plans["kernels"].now
    # a kernel size: its cases x the recorded wall per case (50 s / 25), plus a launch
    assert cost_a.seconds == pytest.approx(4 * 2.0 * costs.MARGIN + 5.0)
    assert cost_b.seconds == pytest.approx(2 * 2.0 * costs.MARGIN + 5.0)
    assert "4 case(s) x 2.00 s" in cost_a.source and "k.log" in cost_a.source
    profile = plans["profile"].now[0][1]
    assert profile.seconds == pytest.approx(80.0 * costs.MARGIN)
    assert profile.source.startswith("at least: stopped unfinished after 80 s")
    missing = plans["kernel-tests"].now[0][1]  # nothing anywhere: named as such
    assert missing.seconds == costs.NO_FIGURE_S
    assert missing.source.startswith("no measurement of it stored anywhere")
    text = "\n".join(lease.describe(list(plans.values()), h100, 3600, est.launch_note))
    assert "<- no measurement of it stored anywhere" in text and "<- at least" in text
    # a lease's own measurements come before the recorded ones: the item's wall, the launch
    h100.step_walls["kernels:a"] = [3.0]
    h100.launch_s = [2.0, 2.5, 3.0]
    est = costs.Estimator(h100, machines)
    assert est.launch_s == 2.5 and "wall_s_breakdown" in est.launch_note
    cost = est.command(Step("kernels", ""), _command_steps()[1].items[0])
    assert cost.seconds == pytest.approx(3.0 * costs.MARGIN)
    assert "earlier lease(s) on nvidia-h100-x1" in cost.source


def test_a_lease_that_cannot_fit_every_kernel_size_runs_some_and_the_next_continues(tmp_path):
    machines = _fixture_root(tmp_path)
    h100 = stored.Machine("nvidia-h100-x1", None)
    sizes = [Item(f"kernels:s{i}", (), False, cases=4, per_case_of="kernels") for i in range(5)]
    steps = [Step("kernels", "", sizes)]
    each = 4 * 2.0 * costs.MARGIN + 5.0
    (first,) = lease.plan_lease(steps, h100, machines, limit_s=2.5 * each)
    assert [i.name for i, _ in first.now] == ["kernels:s0", "kernels:s1"]
    assert len(first.later) == 3
    h100.state = {"done": {"kernels:s0": "x", "kernels:s1": "x"}}  # what that lease finished
    (second,) = lease.plan_lease(steps, h100, machines, limit_s=2.5 * each)
    assert [i.name for i in second.covered] == ["kernels:s0", "kernels:s1"]
    assert [i.name for i, _ in second.now] == ["kernels:s2", "kernels:s3"]


def _bench_case_ids() -> list[str]:
    """The kernel benchmark's case ids as its own `_cases` writes them (the function run from
    its source with the tables read beside it; the module itself needs CUDA to import)."""
    import ast
    import types

    from lab.campaign import kernelcases

    source = (ROOT / kernelcases.BENCH).read_text()
    func = next(n for n in ast.parse(source).body
                if isinstance(n, ast.FunctionDef) and n.name == "_cases")
    fake_pytest = types.SimpleNamespace(param=lambda *args, id: id)
    scope = {**kernelcases.read_tables(ROOT), "pytest": fake_pytest}
    exec(compile(ast.Module([func], []), kernelcases.BENCH, "exec"), scope)
    return scope["_cases"]()


def test_kernel_items_are_one_per_deciding_size_each_selecting_exactly_its_cases():
    from lab.campaign import kernelcases

    ids = [f"test_kernel[{i}]" for i in _bench_case_ids()] + [
        "test_ceiling[copy_GBps]", "test_ceiling[matmul_bf16_TFLOPs]"]
    items = plan.kernel_items(str(ROOT))
    chosen = set()
    for item in items:
        select = item.argv[item.argv.index("-k") + 1]
        matched = [i for i in ids if select.lower() in i.lower()]  # pytest -k on one word
        assert len(matched) == item.cases > 0, (item.name, matched)
        assert not chosen & set(matched), item.name  # no case in two items
        chosen |= set(matched)
        assert item.per_case_of == "kernels" and not item.cell
    names = [i.name for i in items]
    assert names[0] == "kernels:ceilings" and len(names) == len(set(names))
    # the sizes the targets name (bench_kernels.TARGETS and docs/kernels.md)
    for size in ("cross_entropy-8192x128256", "matmul-4096x4096x4096", "matmul-8192x8192x8192",
                 "attention-4x16x4096x128", "attention-4x16x1024x64", "softmax-4096x32768",
                 "swiglu-16384x14336"):
        assert f"kernels:{size}" in names
    assert "kernels:softmax-4096x1024" not in names  # a small size decides no target
    assert kernelcases.size_id("attention", (4, 16, 4096, 128, True)) == "4x16x4096x128-causal"


def test_the_data_parallel_step_runs_only_where_there_are_two_gpus():
    h100, machines = _machines()
    items = plan.distributed_items()
    assert items and all("--ranks" in i.argv for i in items)
    assert {i.key[1] for i in items} >= {"torch-eager+ddp@2", "torch-compile+fsdp@2",
                                         "jax-jit+dp@2", "tf-xla+mirrored@2"}
    steps = [Step("distributed", "", items, needs_gpus=2)]
    (one,) = lease.plan_lease(steps, h100, machines, 3600)
    assert one.skipped == "skipped: needs >= 2 GPUs, nvidia-h100-x1 has 1"
    assert not one.now and not one.later and one.planned == len(items)
    assert "[skipped: needs >= 2 GPUs" in lease.describe([one], h100, 3600, "")[1]
    two = stored.Machine("nvidia-h100-x2", None)
    (both,) = lease.plan_lease(steps, two, {**machines, two.id: two}, 3600)
    assert not both.skipped and both.now
    assert lease.gpu_count("intel-r-xeon-r-processor-2c") == 0


def test_a_lease_records_each_command_item_and_skips_a_step_that_needs_gpus(tmp_path):
    from lab.campaign import execute

    out = tmp_path / "runs"
    machine = provenance.machine_id()
    steps = [Step("kernels", "", [Item("kernels:a", (sys.executable, "-c", "pass"), False),
                                  Item("kernels:b", (sys.executable, "-c", "pass"), False)]),
             Step("distributed", "", [Item("dp", ("--workload", "mlp"), True,
                                           ("mlp", "torch-eager+ddp@2", "train"))],
                  needs_gpus=2)]
    assert execute.Campaign(out, steps, machine, ROOT).run(120) == 0
    state = json.loads((out / machine / stored.STATE).read_text())
    assert set(state["done"]) == {"kernels:a", "kernels:b"}
    assert state["leases"][0]["stopped"]["distributed"].startswith("skipped: needs >= 2 GPUs")
    summary = json.loads((out / machine / state["leases"][0]["folder"] / stored.SUMMARY)
                         .read_text())
    assert [e["name"] for e in summary if e["kind"] == "command"] == ["kernels:a", "kernels:b"]
    again = stored.read_root(out)[machine]
    assert set(again.step_walls) == {"kernels:a", "kernels:b"}  # the next plan's figures
    (kernels, _dp) = lease.plan_lease(steps, again, {machine: again}, 120)
    assert [i.name for i in kernels.covered] == ["kernels:a", "kernels:b"]


def test_a_data_parallel_cell_costs_at_most_its_two_timed_passes():
    h100, machines = _machines()
    est = costs.Estimator(h100, machines)
    key = ("mlp", "torch-eager", "train")  # a CPU figure of 3 s, scaled x2.3
    free = est.item(Step("s", ""), Item("a", (), True, key))
    bounded = est.item(Step("s", ""), Item("b", (), True, key, bound_s=2.0))
    assert free.seconds > 2.0 + est.launch_s
    assert bounded.seconds == pytest.approx(2.0 + est.launch_s)
    assert bounded.source.endswith("at most 2 s, its --timeout per pass")
    (item,) = [i for i in plan.distributed_items() if i.key[1] == "torch-compile+ddp@2"
               and i.key[0] == "transformer"]
    assert item.bound_s == 2 * plan.CELL_TIMEOUT_S


def test_the_campaign_ends_with_the_hf_suite_model_by_model_and_a_later_lease_extends_it():
    """`make gpu`'s last step: the hf suite's inference cells at the real size, eager then
    compiled per model; a lease takes what fits after the steps before it, and a cell stored
    by one lease is covered for the next."""
    from lab.workloads import suites

    (step,) = [s for s in plan.gpu_steps(str(ROOT)) if s.name == "model-suite"]
    assert plan.gpu_steps(str(ROOT))[-1].name == "model-suite"
    assert [i.key[0] for i in step.items[:2]] == ["hf/bert", "hf/bert"]
    assert {i.key[0] for i in step.items} == set(suites.names("hf"))
    assert len(step.items) == 2 * len(suites.names("hf"))
    assert all("|cuda|" in i.name and "tiny=0" in i.name and i.key[2] == "infer"
               for i in step.items)
    h100, machines = _machines()
    first = lease.plan_lease([step], h100, machines, 300)[0]
    assert first.now and first.later  # 66 cells do not fit five minutes
    done = stored.Machine(h100.id, None, [_cell(i.key, 60.0, i.name) for i, _ in first.now])
    second = lease.plan_lease([step], done, {**machines, h100.id: done}, 300)[0]
    assert {i.name for i in second.covered} == {i.name for i, _ in first.now}
    assert not {i.name for i, _ in second.now} & {i.name for i, _ in first.now}
