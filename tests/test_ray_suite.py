"""A suite spread over a Ray cluster: `lab run` of tiny HF models with `--executor ray` on the
two-node cluster of tests/test_ray.py (a head and one more node on this machine), ending with
the suite summary, every model `ok` or with its status stated, each cell timed on a node of
the cluster. Eager only: a tiny model's compile takes minutes on a busy 2-core machine, and
what is tested is that a suite runs and is summarised through Ray, not what compiling buys."""

from __future__ import annotations

import json

import pytest
import test_ray
from test_ray import needs_ray
from verdict_helpers import run_lab_main

from lab.store import folders as store
from lab.store import reader as results

# the two-node cluster of tests/test_ray.py (fixtures; one cluster per module)
ray_cluster, hold_dir = test_ray.ray_cluster, test_ray.hold_dir

MODELS = ["hf/bert", "hf/resnet"]  # an encoder and a vision model: two kinds of input


@needs_ray
@pytest.mark.slow
@pytest.mark.long
def test_a_tiny_suite_runs_on_the_two_node_cluster_and_ends_with_its_summary(ray_cluster,
                                                                             tmp_path):
    import ray

    out = tmp_path / "out"
    done = run_lab_main("run", "--workload", ",".join(MODELS), "--size", "tiny",
                        "--backend", "torch-eager", "--mode", "infer", "--device", "cpu",
                        "--threads", "1", "--repeats", "3", "--executor", "ray",
                        "--ray-address", ray_cluster.address, "--out", str(out),
                        timeout=1400)
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: a model failed, with its status
    assert "suite summary" in done.stdout and "hf (tiny, cpu, fp32)" in done.stdout
    [path] = list(out.glob("*/*/results.json"))
    doc = results.load(path)
    cells = results.cells(doc)
    assert sorted(c["workload"] for c in cells) == sorted(MODELS)
    node_ids = {n["NodeID"] for n in ray.nodes()}
    for c in cells:
        assert c.get("status"), c["name"]
        if c["status"] == "ok":
            assert c["node"]["node_id"] in node_ids  # timed on a node of this cluster
        else:
            assert c.get("reason") and c["status"] in done.stdout  # a failure says why
    fingerprint = json.loads((path.parent / store.FINGERPRINT).read_text())
    assert fingerprint["executor"]["name"] == "ray"
    assert len(fingerprint["executor"]["nodes"]) == 2
    # the summary as `lab show --json` gives it: every model tried, counted by its status
    shown = run_lab_main("show", str(path.parent), "--json", timeout=300)
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)["suites"]
    assert (row["suite"], row["size"], row["backend"]) == ("hf", "tiny", "torch-eager")
    assert row["models"] == len(MODELS) and sum(row["statuses"].values()) == len(MODELS)
    assert set(row["failed_models"]) == {c["workload"] for c in cells if c["status"] != "ok"}
