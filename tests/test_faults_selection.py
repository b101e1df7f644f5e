"""The selection refuses what cannot run, and the gate and check answer only what they can,
tried through the real command line (docs/contract.md): a shape a workload cannot take, a
selection where no cell can run, a cell too large for this machine, a gate with nothing
measured or measured on a busy machine, a claim judged across two machines."""

from __future__ import annotations

import json
import re

import pytest
from test_faults import lab, one_line_error, refused
from verdict_helpers import HARDWARE, cell, document, samples, write_run

from lab.judge import gate as regression
from lab.running import loop as session
from lab.running import selection
from lab.store import provenance
from lab.workloads import footprint

CPU = ["--device", "cpu", "--threads", "1", "--repeats", "3"]


def nothing_written(out) -> bool:
    return not out.exists() or not any(out.rglob("*"))


# ---------------------------------------------------------------- shapes checked when selected


@pytest.mark.parametrize("args, said", [
    (["--workload", "gpt2", "--shape", "heads=3"], "hidden=256 is not divisible by heads=3"),
    (["--workload", "llama", "--shape", "kv_heads=3"], "not divisible by kv_heads=3"),
    (["--workload", "gpt2", "--mode", "generate", "--shape", "new_tokens=5000"],
     "1024 learned positions"),
    (["--workload", "transformer", "--shape", "heads=3"], "d_model=256 is not divisible"),
    (["--workload", "llama-varlen", "--shape", "heads=5"], "not divisible by heads=5"),
])
def test_a_shape_the_workload_cannot_take_is_one_line_and_nothing_runs(tmp_path, args, said):
    out = tmp_path / "runs"
    line = one_line_error(lab("run", *args, "--backend", "torch-eager,torch-compile", *CPU,
                              "--out", str(out)))
    assert said in line and line.startswith(f"lab: error: workload {args[1]}: ")
    assert nothing_written(out)


def test_shape_keys_apply_to_the_workloads_that_have_them():
    cells, _ = session.plan(session.Selection(
        workloads=["gpt2", "llama"], backends=["torch-eager"], device="cpu",
        shape={"kv_heads": 4}, named_shape={"seq": 64}))
    shapes = {c.spec.workload: c.spec.shape for c in cells}
    assert shapes["llama"]["kv_heads"] == 4 and "kv_heads" not in shapes["gpt2"]
    assert shapes["gpt2"]["seq"] == shapes["llama"]["seq"] == 64


def test_a_shape_key_no_selected_workload_has_is_refused(tmp_path):
    line = one_line_error(lab("run", "--workload", "gpt2,mlp", "--shape", "kv_heads=2", *CPU,
                              "--out", str(tmp_path)))
    assert "--shape kv_heads: none of the workloads (gpt2, mlp) has a kv_heads parameter" in line


def test_bucket_0_the_listed_default_is_accepted_and_negative_refused(capsys):
    from lab import workloads

    assert workloads.get("llama-varlen").default_shape("cpu")["bucket"] == 0  # `lab list` shows
    cells, _ = session.plan(session.Selection(workloads=["llama-varlen"], device="cpu",
                                              shape={"bucket": 0}))
    assert cells[0].spec.shape["bucket"] == 0
    assert "must be positive" in refused(capsys, "run", "--workload", "llama-varlen",
                                         "--shape", "bucket=-1", *CPU)
    # elsewhere 0 is still no size
    assert "d_model=0" in refused(capsys, "run", "--workload", "transformer", "--shape",
                                  "d_model=0", *CPU)


# ---------------------------------------------------------------- nothing can run


@pytest.mark.parametrize("args, said", [
    (["--workload", "mlp", "--mode", "generate"],
     "workload mlp has no generate mode (generate: gpt2, llama)"),
    (["--workload", "mlp,transformer", "--mode", "train",
      "--backend", "torchscript,onnxruntime,torch-export"],
     "backend torchscript is an inference runtime: infer mode only (mlp train torchscript "
     "and 1 more)"),
    (["--workload", "mlp", "--precision", "amp-fp16", "--backend", "torchscript,onnxruntime"],
     "amp-fp16: inference runtimes run the converted model in its stored dtype"),
])
def test_a_selection_where_no_cell_can_run_is_refused_with_the_reasons(tmp_path, args, said):
    out = tmp_path / "runs"
    line = one_line_error(lab("run", *args, *CPU, "--out", str(out)))
    assert "no cell of this selection can run: " in line and said in line
    assert nothing_written(out)


def test_cells_that_cannot_run_are_skipped_when_planned_not_in_a_process():
    cells, _ = session.plan(session.Selection(
        workloads=["mlp"], backends=["torch-eager", "torchscript"], modes=["infer", "train"],
        device="cpu", precision="fp32"))
    reasons = {(c.choice.label, c.spec.mode): c.skip_reason for c in cells}
    assert reasons[("torchscript", "train")] == \
        "backend torchscript is an inference runtime: infer mode only"
    assert reasons[("torch-eager", "train")] is None


# ---------------------------------------------------------------- memory before running


def test_a_cell_larger_than_this_machines_memory_is_refused_with_the_estimate(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(selection, "available_memory", lambda device: (8 * footprint.GIB,
                                                                       "available"))
    out = tmp_path / "runs"
    line = refused(capsys, "run", "--workload", "llama", "--full-size", "--mode", "train",
                   "--backend", "torch-eager", *CPU, "--out", str(out))
    size = float(re.search(r"needs about ([\d.]+) GiB", line).group(1))
    # Llama-3.2-1B: 1.24e9 float32 weights, gradients and AdamW's two states are 18 GiB alone
    params = 1_235_814_400
    assert size > 4 * 4 * params / footprint.GIB
    assert "of 8.0 GiB available" in line and "--allow-large" in line
    assert "no stored timing of this cell on this machine" in line
    assert nothing_written(out)


def test_allow_large_plans_it_and_a_close_cell_warns_with_the_time_a_stored_run_scales_to(
        tmp_path, monkeypatch):
    monkeypatch.setattr(selection, "available_memory", lambda device: (8 * footprint.GIB,
                                                                       "available"))
    warned = []
    monkeypatch.setattr(selection, "check_memory.__defaults__", None, raising=False)
    real = selection.check_memory
    monkeypatch.setattr(selection, "check_memory",
                        lambda *a, **k: real(*a, **{**k, "warn": warned.append}))
    # a stored gpt2 cell on this machine: 10 ms a step at the CPU default shape
    from lab import workloads

    gpt2 = workloads.get("gpt2")
    small = gpt2.default_shape("cpu")
    stored = cell("gpt2", "torch-eager", "infer", samples(0.01), precision="fp32",
                  median_s=0.01, flops_per_step=gpt2.flops(small, "infer"))
    run = tmp_path / "runs" / provenance.machine_id() / "r1"
    run.mkdir(parents=True)
    write_run(run, [stored])
    cells, _ = session.plan(session.Selection(
        workloads=["gpt2"], backends=["torch-eager"], modes=["infer"], device="cpu",
        full_size=True, allow_large=True, stored_runs=str(tmp_path / "runs")))
    assert len(cells) == 1 and len(warned) == 1
    scale = gpt2.flops(cells[0].spec.shape, "infer") / gpt2.flops(small, "infer")
    step = float(re.search(r"a step may take ~([\d.]+) s", warned[0]).group(1))
    assert step == pytest.approx(0.01 * scale, rel=1e-2)  # printed to 3 significant digits
    assert "run r1's 0.01 s scaled by flops" in warned[0]
    # --full-size tells of the cells it makes larger: the mlp has one size
    session.plan(session.Selection(workloads=["mlp"], backends=["torch-eager"], device="cpu",
                                   full_size=True))
    assert len(warned) == 1


def test_the_estimate_counts_weights_gradients_and_both_sides_optimizer_state():
    from lab import workloads

    llama = workloads.get("llama")
    shape = llama.default_shape("cuda")
    train = footprint.estimate(llama, shape, "train", "fp32", sides=2).parts
    params = 1_235_814_400  # Llama-3.2-1B with tied embeddings
    assert train["weights"] == train["gradients"] == 4 * params
    assert train["optimizer state"] == 2 * 2 * 4 * params  # AdamW: two copies per side
    half = footprint.estimate(llama, shape, "infer", "bf16").parts
    assert half["weights"] == 2 * params and "gradients" not in half
    assert footprint.estimate(workloads.get("examples/my_model.py:make_model"), {}, "train",
                              "fp32") is None  # a user's factory: the lab cannot tell


# ---------------------------------------------------------------- the gate


def _gate_pair(tmp_path, base_entries, cand_entries):
    for name, entries in (("a", base_entries), ("b", cand_entries)):
        (tmp_path / name).mkdir()
        write_run(tmp_path / name, entries)
    return str(tmp_path / "a"), str(tmp_path / "b")


def _timed(name: str, medians: list[float], **extra) -> dict:
    data = [s for i, m in enumerate(medians) for s in samples(m, 10, seed=i)]
    return cell(name, "torch-eager", "infer", data, process_medians_s=medians, **extra)


def test_a_gate_where_every_cell_failed_has_nothing_to_compare(tmp_path):
    failed = [cell(w, "torch-eager", "infer", None, status="run_error")
              for w in ("mlp", "transformer")]
    base, cand = _gate_pair(tmp_path, failed, failed)
    for extra in ([], ["--json"]):
        proc = lab("gate", base, cand, *extra)
        line = one_line_error(proc)
        assert "nothing to compare: 2 benchmark(s) not measured ok in both runs" in line
        assert proc.stdout == ""  # no "pass", no JSON with failed: false


def test_busy_cells_are_inconclusive_busy_in_every_output_and_never_regressed(tmp_path):
    quiet = [1.00e-3, 1.02e-3, 0.98e-3]
    base = [_timed("mlp", quiet), _timed("transformer", quiet)]
    # the candidate's transformer 7x slower while neighbours held the cores (issue: it was
    # `regressed 6.994x` beside the lab's own `ok (noisy, busy)`)
    cand = [_timed("mlp", quiet), _timed("transformer", [7e-3, 2e-3, 40e-3], machine_busy=True)]
    a, b = _gate_pair(tmp_path, base, cand)
    md = tmp_path / "gate.md"
    text = lab("gate", a, b, "--markdown", str(md))
    assert text.returncode == 0, text.stdout + text.stderr
    row = next(line for line in text.stdout.splitlines() if "transformer" in line)
    assert "| inconclusive (busy) |" in row and "candidate timed while other work" in row
    assert "regressed" not in row
    assert re.search(r"0 regressed, .* \d inconclusive \(1 busy\)", text.stdout)
    assert md.read_text() == text.stdout
    doc = json.loads(lab("gate", a, b, "--json").stdout)
    (busy,) = [v for v in doc["verdicts"] if v["busy"]]
    assert busy["verdict"] == "inconclusive" and busy["busy"] == ["candidate"]
    assert doc["failed"] is False
    # nothing quiet left to judge: no pass
    a2, b2 = _gate_pair(tmp_path / "all", base[1:], cand[1:]) if (tmp_path / "all").mkdir() \
        is None else (None, None)
    line = one_line_error(lab("gate", a2, b2))
    assert "nothing to compare: 1 timed while the machine was busy" in line


def test_a_failure_in_a_busy_candidate_is_still_a_regression(tmp_path):
    base = [_timed("mlp", [1e-3] * 3)]
    cand = [cell("mlp", "torch-eager", "infer", None, status="fail_accuracy",
                 machine_busy=True)]
    a, b = _gate_pair(tmp_path, base, cand)
    assert lab("gate", a, b).returncode == 1


def test_the_gates_note_never_contradicts_its_verdict():
    """t regime (3 processes a side): a 7x slowdown is regressed although the t interval's 80%
    power point is further out; the note says what decided, not `detects >= X`."""
    base = document([_timed("mlp", [1.00e-3, 1.02e-3, 0.98e-3])])
    slow = document([_timed("mlp", [7.0e-3, 2.0e-3, 40e-3])])
    (row,) = regression.compare_runs(base, slow, 0.05)
    assert row.verdict == "regressed" and not row.rank_decides
    assert row.min_detectable_ratio > row.ratio  # the case that read as a contradiction
    assert row.note() == "t interval: 98% interval wholly above 1"
    same = document([_timed("mlp", [1.01e-3, 0.99e-3, 1.00e-3])])
    (row,) = regression.compare_runs(base, same, 0.05)
    assert row.verdict in ("inconclusive", "unchanged")
    assert row.note() == f"t interval: finds >= {row.min_detectable_ratio:.2f}x with 80% power"
    text = regression.gate_markdown([row], 0.05, "a", "b")
    assert "detects" not in text


# ---------------------------------------------------------------- lab check


H200 = {"cpu_model": "Other CPU", "cpu_count": 16, "memory_gib": 64.0, "machine": "x86_64",
        "gpus": [{"name": "NVIDIA H200", "memory": "143771 MiB"}]}

CLAIM = """
[[claim]]
id = "c"
quote = "compile is 1.2x faster"
metric = "speedup"
backend = "torch-compile"
workload = ["mlp", "transformer"]
mode = ["infer", "train", "generate"]
expect = "at_least"
value = 1.2
precision = "fp32"
"""


def _speedup(workload: str, mode: str, device: str = "cpu") -> dict:
    return cell(workload, "torch-compile", mode, samples(1e-3, seed=1), device=device,
                precision="fp32", baseline_samples_s=samples(1.5e-3, seed=2))


def test_check_refuses_to_measure_here_beside_another_machines_run(tmp_path):
    claims = tmp_path / "c.toml"
    claims.write_text(CLAIM)
    write_run(tmp_path, [_speedup("mlp", "infer", "cuda")], hardware=H200)
    line = one_line_error(lab("check", str(claims), "--run", str(tmp_path),
                              "--out", str(tmp_path / "new")))
    assert f"measured on {provenance.machine_id(H200)}" in line
    assert f"this machine, {provenance.machine_id()}" in line
    assert nothing_written(tmp_path / "new")
    judged = lab("check", str(claims), "--run", str(tmp_path), "--stored-only")
    assert judged.returncode == 0 and "NVIDIA H200 x1" in judged.stdout


def test_check_reads_gpus_stored_as_bare_names(tmp_path):
    claims = tmp_path / "c.toml"
    claims.write_text(CLAIM)
    path = write_run(tmp_path, [_speedup("mlp", "infer", "cuda")], hardware=H200)
    doc = json.loads(path.read_text())
    doc["machine_info"]["lab_hardware"]["gpus"] = ["NVIDIA H200"]
    path.write_text(json.dumps(doc))
    judged = lab("check", str(claims), "--run", str(tmp_path), "--stored-only")
    assert judged.returncode == 0, judged.stderr
    assert "measured on NVIDIA H200 x1" in judged.stdout


def test_claims_list_only_the_cells_their_workloads_have(tmp_path):
    claims = tmp_path / "c.toml"
    claims.write_text(CLAIM)
    write_run(tmp_path, [_speedup("mlp", "infer"), _speedup("transformer", "infer")],
              hardware=HARDWARE)
    judged = lab("check", str(claims), "--run", str(tmp_path), "--stored-only")
    assert judged.returncode == 0, judged.stderr
    assert "mlp infer:" in judged.stdout and "transformer train:" in judged.stdout
    assert "generate" not in judged.stdout.split("measured on")[1]  # no "mlp generate" cell
    claims.write_text(CLAIM.replace('["infer", "train", "generate"]', '"generate"'))
    line = one_line_error(lab("check", str(claims), "--run", str(tmp_path), "--stored-only"))
    assert "none of the claim's workloads (mlp, transformer) has mode generate" in line


def test_check_decides_nothing_across_processes_when_one_ran_busy(tmp_path):
    """As the gate: two cells' step times from two processes, one slowed by neighbours, are
    shown and not decided; a paired in-process speedup shares the load and keeps its verdict."""
    claims = tmp_path / "c.toml"
    claims.write_text(CLAIM.replace('mode = ["infer", "train", "generate"]', 'mode = "infer"')
                      + """
[[claim]]
id = "t"
quote = "compile has twice torch-eager's throughput"
metric = "throughput"
backend = "torch-compile"
versus = "torch-eager"
workload = "mlp"
expect = "at_least"
value = 2.0
precision = "fp32"
""")
    eager = cell("mlp", "torch-eager", "infer", samples(3e-3, seed=3), precision="fp32",
                 process_medians_s=[3.0e-3, 3.1e-3, 2.9e-3])
    compiled = {**_speedup("mlp", "infer")}
    compiled["extra_info"] = {**compiled["extra_info"], "machine_busy": True,
                              "process_medians_s": [1.0e-3, 1.02e-3, 0.98e-3]}
    write_run(tmp_path, [eager, compiled], hardware=HARDWARE)
    judged = lab("check", str(claims), "--run", str(tmp_path), "--stored-only", "--json")
    assert judged.returncode == 0, judged.stderr
    verdicts = {c["id"]: c for c in json.loads(judged.stdout)["claims"]}
    paired = next(c for c in verdicts["c"]["cells"] if c["label"] == "mlp infer")
    assert paired["verdict"] == "supported" and "machine busy" in paired["reason"]
    (across,) = verdicts["t"]["cells"]
    assert across["verdict"] == "inconclusive" and across["ratio"] > 2.5
    assert "busy: step times of two processes are not compared" in across["reason"]
