import json

import pytest

from lab.store import folders as store
from lab.store import provenance
from lab.store import reader as results


def _doc(samples=(0.001, 0.0011, 0.0012)):
    fp = provenance.fingerprint(threads=2)
    bench = {"group": "g", "name": "mlp[torch-eager|infer|cpu|float32|batch=32]",
             "fullname": "lab::mlp", "params": None, "param": None, "extra_info": {"status": "ok"},
             "options": {}, "stats": store.pytest_benchmark_stats(list(samples), 1)}
    return store.results_document(fp, [bench], [], {"run_id": "r", "started": "2026-01-01T00:00"})


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    store.atomic_write_json(tmp_path / "a" / "results.json", {"x": 1})
    assert json.loads((tmp_path / "a" / "results.json").read_text()) == {"x": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["results.json"]


def test_results_round_trip_keeps_raw_samples(tmp_path):
    store.atomic_write_json(tmp_path / "results.json", _doc())
    doc = results.load(tmp_path)
    stats = doc["benchmarks"][0]["stats"]
    assert stats["data"] == [0.001, 0.0011, 0.0012]
    assert stats["median"] == pytest.approx(0.0011) and stats["rounds"] == 3
    assert doc["machine_info"]["lab_machine_id"] == provenance.machine_id()


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ('{"machine_info": {}, "benchmarks": [', "not valid JSON"),
    ('{"benchmarks": []}', "not a pytest-benchmark results file"),
    ('{"machine_info": {}, "benchmarks": [{"name": "x", "stats": {}}]}', "raw samples"),
])
def test_unusable_results_give_one_line_errors(tmp_path, content, message):
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(results.StoreError, match=message) as info:
        results.load(tmp_path / "results.json")
    assert "\n" not in str(info.value)


def test_missing_results_is_an_error(tmp_path):
    with pytest.raises(results.StoreError, match="no results"):
        results.load(tmp_path / "nope")


def test_fingerprint_names_hardware_versions_and_threads():
    fp = provenance.fingerprint(threads=3)
    assert fp["threads"] == 3
    assert fp["hardware"]["cpu_count"] >= 1 and fp["hardware"]["cpu_model"]
    assert "python" in fp["versions"] and "numpy" in fp["versions"]
    assert "id" in fp["git"]


def test_pytest_benchmark_compare_reads_a_stored_run(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "results.json"
    store.atomic_write_json(path, _doc())
    code = "import sys; from pytest_benchmark.cli import main; sys.exit(main())"
    out = subprocess.run([sys.executable, "-c", code, "compare", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "mlp[torch-eager" in out.stdout
