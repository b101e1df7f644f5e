"""Hugging Face models as user workloads, through the real command line: keyword inputs
(`model(input_ids=..., attention_mask=...)`), structured outputs (ModelOutput), the model's own
loss when it is given labels, and a model that fails in eager reported as the model's failure
(`run_error` naming eager), not as the compiler's.

The models are built from tiny configs with random weights (2 layers, hidden 32), dropout off
(train mode keeps dropout on, and two eager runs would then differ: eager_nondeterministic).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lab.workloads import user

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--repeats", "3", "--device", "cpu", "--threads", "1"]

pytest.importorskip("transformers")

FACTORIES = '''
import torch
from transformers import (BertConfig, BertForSequenceClassification, T5Config,
                          T5ForConditionalGeneration)


def _bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def bert_labels():
    ids = torch.randint(0, 100, (2, 16))
    return _bert(), {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                     "labels": torch.tensor([0, 2])}


def bert_mixed():
    ids = torch.randint(0, 100, (2, 16))
    return _bert(), (ids, {"attention_mask": torch.ones_like(ids)})


def t5():
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=2, dropout_rate=0.0, use_cache=False, decoder_start_token_id=0))
    return model, {"input_ids": torch.randint(0, 100, (2, 12)),
                   "decoder_input_ids": torch.randint(0, 100, (2, 6))}


def not_tensors():
    return torch.nn.Linear(2, 2), {"input": torch.ones(1, 2), "scale": 2.0}
'''


def lab(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=dict(os.environ))


def cells(out: Path) -> dict[tuple[str, str], dict]:
    [path] = list(out.glob("*/*/results.json"))
    doc = json.loads(path.read_text())
    return {(e["extra_info"]["backend"], e["extra_info"]["mode"]): e["extra_info"]
            for e in doc["benchmarks"] + doc["lab"]["unmeasured"]}


@pytest.fixture
def factories(tmp_path) -> Path:
    path = tmp_path / "hf_models.py"
    path.write_text(FACTORIES)
    return path


def _all_ok(proc, found: dict, expected: int) -> None:
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
    assert len(found) == expected
    bad = {key: (cell["status"], cell["reason"]) for key, cell in found.items()
           if cell["status"] != "ok"}
    assert not bad, bad


@pytest.mark.long  # four BERT cells through the CLI, two compiled: minutes on 2 cores
@pytest.mark.slow
def test_bert_with_keyword_inputs_and_labels_trains_on_its_own_loss(factories, tmp_path):
    proc = lab("run", "--workload", f"{factories}:bert_labels", "--backend",
               "torch-eager,torch-compile", "--mode", "infer,train", "--out",
               str(tmp_path / "out"), *COMMON)
    found = cells(tmp_path / "out")
    _all_ok(proc, found, 4)
    for backend in ("torch-eager", "torch-compile"):
        assert found[(backend, "train")]["loss"] == user.DefaultLoss.OWN
        assert found[(backend, "infer")]["loss"] is None
    # infer judges every tensor of the ModelOutput (loss and logits), compiled against eager
    assert found[("torch-compile", "infer")]["accuracy"]["passed"]
    assert found[("torch-compile", "train")]["memory"]["step_peak_above_resident_mib"] \
        is not None


@pytest.mark.long
@pytest.mark.slow
def test_t5_encoder_decoder_with_decoder_input_ids(factories, tmp_path):
    proc = lab("run", "--workload", f"{factories}:t5", "--backend", "torch-eager,torch-compile",
               "--mode", "infer,train", "--out", str(tmp_path / "out"), *COMMON)
    found = cells(tmp_path / "out")
    _all_ok(proc, found, 4)
    # no labels: the default loss over the outputs' floating tensors (logits, encoder state)
    assert found[("torch-compile", "train")]["loss"] == user.DefaultLoss.SQUARES


@pytest.mark.long
@pytest.mark.slow
def test_positional_and_keyword_inputs_through_the_inference_runtimes(factories, tmp_path):
    proc = lab("run", "--workload", f"{factories}:bert_mixed", "--backend",
               "torch-eager,torchscript,onnxruntime", "--mode", "infer",
               "--out", str(tmp_path / "out"), *COMMON)
    found = cells(tmp_path / "out")
    _all_ok(proc, found, 3)


def test_a_model_that_fails_in_eager_is_a_run_error_of_eager_not_a_compile_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(textwrap.dedent('''
        import torch

        class Broken(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(4, 4)

            def forward(self, x, mask):
                return self.lin(x).float() + mask.no_such_method()

        def make():
            return Broken(), {"x": torch.randn(2, 4), "mask": torch.ones(2, 4)}
    '''))
    proc = lab("run", "--workload", f"{path}:make", "--backend", "torch-eager,torch-compile",
               "--mode", "train", "--out", str(tmp_path / "out"), *COMMON)
    assert proc.returncode == 1, proc.stderr[-2000:]
    found = cells(tmp_path / "out")
    eager, compiled = found[("torch-eager", "train")], found[("torch-compile", "train")]
    assert eager["status"] == "run_error" and "no_such_method" in eager["reason"]
    assert compiled["status"] == "run_error", compiled["reason"]
    assert compiled["reason"].startswith("eager (torch-eager) fails too: AttributeError")


def test_keyword_inputs_that_are_not_tensors_are_refused_in_one_line(factories):
    proc = lab("run", "--workload", f"{factories}:not_tensors", "--backend", "torch-eager",
               *COMMON)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: error: "), proc.stderr
    assert "must give tensors as inputs" in lines[0] and "keyword 'scale'" in lines[0]


def test_the_default_loss_of_a_plain_tensor_is_its_mean_square():
    """The default loss is unchanged for a model returning one tensor: mean of its squares;
    for several outputs, the sum of theirs."""
    import torch

    loss = user.DefaultLoss()
    x = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    assert loss(x).item() == pytest.approx(14 / 4)
    assert loss.used == user.DefaultLoss.SQUARES
    assert loss((x, {"b": torch.ones(3), "n": torch.arange(3)})).item() == \
        pytest.approx(14 / 4 + 1.0)
    assert loss({"loss": torch.tensor(0.5), "logits": x}).item() == 0.5
    assert loss.used == user.DefaultLoss.OWN
