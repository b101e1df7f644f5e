"""`lab run --resume RUN`: a run cut short by Ctrl-C is continued, not restarted, through the
real command line; the resumed run holds every cell of the selection once and is complete.
A resume that would mix measurements of different settings is refused before anything runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import ROOT, lab, slow_factory, stored_run

COMMON = ["--backend", "torch-eager", "--mode", "infer", "--repeats", "3", "--device", "cpu",
          "--threads", "1"]


def _names(doc: dict) -> list[str]:
    return [b["name"] for b in doc["benchmarks"]] + \
        [u["name"] for u in doc["lab"]["unmeasured"]]


def _interrupted_after_the_first_cell(selection: list[str], out: Path) -> None:
    """`lab run SELECTION`, Ctrl-C as soon as its first cell is stored; it must end with 130."""
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "run", *selection], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until the first cell is stored
            files = list(out.glob("*/*/results.json"))
            if files and json.loads(files[0].read_text())["benchmarks"]:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        else:
            pytest.fail("the first cell never finished")
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output[-3000:]


@pytest.mark.slow
def test_an_interrupted_run_resumed_holds_every_cell_once(tmp_path):
    # the second workload sleeps in its forward: the interrupt lands while it runs
    slow = slow_factory(tmp_path, 0.3)
    out = tmp_path / "out"
    selection = ["--workload", f"mlp,{slow}", "--batch", "2", *COMMON, "--out", str(out)]
    _interrupted_after_the_first_cell(selection, out)
    run_dir, first = stored_run(out)
    assert first["lab"]["complete"] is False
    assert len(_names(first)) == 1
    kept_samples = first["benchmarks"][0]["stats"]["data"]

    done = lab("run", *selection, "--resume", str(run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    again, doc = stored_run(out)  # no second run folder
    assert again == run_dir
    names = _names(doc)
    assert len(names) == 2 and len(set(names)) == 2, names
    assert sorted(n.split("[")[0].rsplit("/", 1)[-1] for n in names) == ["mlp", "slow.py:make"]
    assert doc["lab"]["complete"] is True
    assert doc["lab"]["started"] == first["lab"]["started"]
    assert len(doc["lab"]["resumed"]) == 1 and doc["lab"]["resumed"][0]["cells_kept"] == 1
    # the finished cell is the one measured before the interrupt, not measured again
    mlp = next(b for b in doc["benchmarks"] if b["name"].startswith("mlp["))
    assert mlp["stats"]["data"] == kept_samples

    # resumed once more, by the run alone (its stored command line is the selection):
    # nothing is left, nothing runs, nothing is added
    idle = lab("run", "--resume", str(run_dir))
    assert idle.returncode == 0, idle.stderr[-3000:]
    assert sorted(_names(stored_run(out)[1])) == sorted(names)


def _stored_run(tmp_path: Path) -> tuple[Path, list[str]]:
    out = tmp_path / "out"
    selection = ["--workload", "mlp", "--batch", "2", *COMMON, "--out", str(out)]
    done = lab("run", *selection)
    assert done.returncode == 0, done.stderr[-3000:]
    return stored_run(out)[0], selection


@pytest.mark.slow
def test_an_interrupted_suite_run_resumed_holds_every_model_once_and_ends_with_its_summary(
        tmp_path):
    """A suite run (four tiny hf models) cut short by Ctrl-C after its first model, then
    `--resume`d: every model's cell once, the run complete, the suite summary over all four."""
    models = ["hf/albert", "hf/electra", "hf/distilbert", "hf/mobilenet-v2"]
    out = tmp_path / "out"
    selection = ["--workload", ",".join(models), "--size", "tiny", *COMMON, "--out", str(out)]
    _interrupted_after_the_first_cell(selection, out)
    run_dir, first = stored_run(out)
    assert first["lab"]["complete"] is False and 1 <= len(_names(first)) < len(models)
    done = lab("run", *selection, "--resume", str(run_dir), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    again, doc = stored_run(out)
    assert again == run_dir and doc["lab"]["complete"] is True
    assert sorted(name.split("[")[0] for name in _names(doc)) == sorted(models)
    assert "suite summary" in done.stdout and "4/4 (100%)" in done.stdout


@pytest.mark.slow
def test_a_resume_with_other_settings_is_refused_unless_told(tmp_path):
    run_dir, selection = _stored_run(tmp_path)
    before = (run_dir / "results.json").read_bytes()
    other = [a if a != "3" else "4" for a in selection]  # --repeats 4: samples differ
    refused = lab("run", *other, "--resume", str(run_dir))
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: error: --resume"), refused.stderr
    assert "repeats 3 (stored) vs 4 (now)" in lines[0] and "--resume-anyway" in lines[0]
    assert (run_dir / "results.json").read_bytes() == before  # nothing written
    # told: the stored mlp cell is finished, so nothing is measured again
    anyway = lab("run", *other, "--resume", str(run_dir), "--resume-anyway")
    assert anyway.returncode == 0, anyway.stderr[-3000:]
    assert len(_names(json.loads((run_dir / "results.json").read_text()))) == 1


def test_resume_refuses_another_commit_or_machine(tmp_path, monkeypatch):
    """The checks themselves, on a stored run whose fingerprint names another commit and
    another CPU (no cell runs)."""
    from lab.core.errors import UsageError
    from lab.running import resume
    from lab.store import folders as store
    from lab.store import provenance

    run_dir = tmp_path / "m" / "r1"
    run_dir.mkdir(parents=True)
    fp = provenance.fingerprint(threads=1)
    doc = store.results_document(fp, [], [], {"run_id": "r1", "kind": "run", "order": []},
                                 {"machine_info": {"lab_hardware": fp["hardware"]},
                                  "commit_info": {}})
    (run_dir / "results.json").write_text(json.dumps(doc))
    old = {**fp, "git": {"id": "0" * 40, "dirty": False},
           "hardware": {**fp["hardware"], "cpu_model": "Some Other CPU"}}
    (run_dir / "fingerprint.json").write_text(json.dumps(old))
    with pytest.raises(UsageError) as caught:
        resume.prepare(str(run_dir), tmp_path, [], fp)
    assert "another machine" in str(caught.value) and "another lab commit" in str(caught.value)
    assert resume.prepare(str(run_dir), tmp_path, [], fp, anyway=True).run_dir == run_dir
    (run_dir / "fingerprint.json").write_text(json.dumps(fp))
    assert resume.prepare(str(run_dir), tmp_path, [], fp).finished == set()


def test_resume_anyway_alone_is_refused(capsys):
    from lab import cli

    code = cli.main(["run", "--workload", "mlp", "--device", "cpu", "--resume-anyway"])
    assert code == 2
    assert "--resume-anyway goes with --resume" in capsys.readouterr().err
