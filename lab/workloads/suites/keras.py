"""The Keras 3 suite: `keras_hub` models built from their constructors with random weights
(never from a preset download), each run on Keras's TensorFlow, JAX and PyTorch backends
(lab.compile.keras_common), the same model definition on three frameworks, as the Keras 3
benchmark table (keras.io "Keras 3 benchmarks") runs BERT, Gemma and others.

Same weights, same inputs: the first cell of a model (size, shape, seed) to run writes a
fixture (lab.workloads.suites.keras_fixture): the model built once on the TensorFlow backend,
its weights saved as a Keras `.weights.h5` file, the inputs and labels as arrays, and its
outputs on them in float32 and float64. Every backend's cell builds the model, loads those
weights and inputs, and checks its own eager output against the fixture's before it times
anything: that is the cross-backend check (`diagnostics.cross_backend`).

Sizes (the shape key `tiny`, as in the hf suite): 0 is the preset's architecture (the numbers
of `bert_base_en_uncased`, `gpt2_base_en`, `llama3.2_1b`, `gemma_2b_en`,
`resnet_50_imagenet`, `vit_base_patch16_224_imagenet`), passed to the constructors; 1 is the
hf suite's tiny size (two layers, width 64, vocabulary 1000; the vision models' smallest
stages at 32 px), so the two suites' tiny cells are the same architecture numbers. Dropout is
0 everywhere: a random mask makes two eager steps disagree.

A step is what a Keras user runs: `model.predict_on_batch(x)` (infer) or
`model.train_on_batch(x, y)` (train, SGD at the lab's learning rate, sparse cross-entropy on
the logits), under `model.compile(jit_compile=True)` or `run_eagerly=True`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

from lab.workloads.base import Workload
from lab.workloads.suites import check_size_and_seq

SUITE = "keras"
# `--suite keras` without --backend: the compiled backends, each cell timing its eager side
BACKENDS = ("keras-tf-jit", "keras-jax-jit", "keras-torch-jit")
# the hf suite's CPU shapes (lab.workloads.suites.hf), so the HF column compares like with like
DEFAULT_SHAPES = {"cpu": {"batch": 1, "seq": 128}, "cuda": {"batch": 8, "seq": 512}}
TINY_TEXT = dict(vocabulary_size=1000, num_layers=2, num_heads=2, hidden_dim=64,
                 intermediate_dim=128)
TINY_DECODER = dict(vocabulary_size=1000, num_layers=2, num_query_heads=2,
                    num_key_value_heads=2, hidden_dim=64, intermediate_dim=128)


@dataclass(frozen=True)
class Entry:
    """One model: its backbone and task classes (names in `keras_hub.models`), the
    constructor arguments of each size, and the hf suite model of the same architecture."""

    name: str
    group: str  # encoder, decoder, vision
    backbone: str
    model: str  # the task class: what predict_on_batch and train_on_batch run
    inputs: str  # masked-lm, causal-lm, image
    tiny: dict
    real: dict
    hf: str | None = None  # the hf suite's workload of the same architecture
    task_args: dict = field(default_factory=dict)
    note: str = ""
    image_size: tuple[int, int] = (224, 32)  # (real, tiny)
    max_seq: int = 512

    @property
    def workload_name(self) -> str:
        return f"{SUITE}/{self.name}"

    @property
    def task(self) -> str:
        return "image-classification" if self.inputs == "image" else self.inputs

    def args(self, tiny: bool) -> dict:
        return dict(self.tiny if tiny else self.real)


RESNET_STEM = dict(input_conv_filters=[64], input_conv_kernel_sizes=[7])
ENTRIES = [
    Entry("bert", "encoder", "BertBackbone", "BertMaskedLM", "masked-lm",
          dict(TINY_TEXT, dropout=0.0),
          dict(vocabulary_size=30522, num_layers=12, num_heads=12, hidden_dim=768,
               intermediate_dim=3072, dropout=0.0),
          hf="hf/bert", note="bert_base_en_uncased's numbers; masked LM over every position"),
    Entry("gpt2", "decoder", "GPT2Backbone", "GPT2CausalLM", "causal-lm",
          dict(TINY_TEXT, dropout=0.0),
          dict(vocabulary_size=50257, num_layers=12, num_heads=12, hidden_dim=768,
               intermediate_dim=3072, dropout=0.0),
          hf="hf/gpt2", note="gpt2_base_en's numbers"),
    Entry("llama", "decoder", "LlamaBackbone", "LlamaCausalLM", "causal-lm", TINY_DECODER,
          dict(vocabulary_size=128256, num_layers=16, num_query_heads=32,
               num_key_value_heads=8, hidden_dim=2048, intermediate_dim=8192,
               rope_max_wavelength=500000, tie_word_embeddings=True),
          hf="hf/llama", note="llama3.2_1b's numbers (its RoPE scaling left out)"),
    Entry("gemma", "decoder", "GemmaBackbone", "GemmaCausalLM", "causal-lm",
          # keras_hub's Gemma halves intermediate_dim in its gated MLP: 256 is HF's 128
          dict(TINY_DECODER, intermediate_dim=256, head_dim=32),
          dict(vocabulary_size=256000, num_layers=18, num_query_heads=8,
               num_key_value_heads=1, hidden_dim=2048, intermediate_dim=32768,
               head_dim=256),
          hf="hf/gemma", note="gemma_2b_en's numbers"),
    Entry("resnet", "vision", "ResNetBackbone", "ResNetImageClassifier", "image",
          # keras_hub wants 64 filters in the first stack; the others are the hf tiny's
          # widths over the bottleneck's expansion of 4
          dict(RESNET_STEM, input_conv_filters=[16], stackwise_num_filters=[64, 8, 16, 32],
               stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2],
               block_type="bottleneck_block"),
          dict(RESNET_STEM, stackwise_num_filters=[64, 128, 256, 512],
               stackwise_num_blocks=[3, 4, 6, 3], stackwise_num_strides=[1, 2, 2, 2],
               block_type="bottleneck_block"),
          hf="hf/resnet", task_args=dict(num_classes=1000),
          note="resnet_50_imagenet's numbers; 1000 classes"),
    Entry("vit", "vision", "ViTBackbone", "ViTImageClassifier", "image",
          dict(patch_size=4, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128),
          dict(patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072),
          hf="hf/vit", task_args=dict(num_classes=1000),
          note="vit_base_patch16_224_imagenet's numbers; 1000 classes"),
]
BY_NAME = {e.workload_name: e for e in ENTRIES}


def backbone_args(entry: Entry, tiny: bool, side: int | None = None) -> dict:
    """The backbone constructor's arguments; images get their square shape, channels last."""
    args = entry.args(tiny)
    if entry.inputs == "image":
        side = side or entry.image_size[1 if tiny else 0]
        args["image_shape"] = (side, side, 3)
    return args


def make_model(entry: Entry, tiny: bool, side: int | None = None, dtype: str | None = None):
    """The task model with fresh random weights, on whatever backend Keras runs on; `dtype`
    (a Keras dtype policy name) for the float64 reference."""
    import keras_hub

    kwargs = {"dtype": dtype} if dtype else {}
    backbone = getattr(keras_hub.models, entry.backbone)(
        **backbone_args(entry, tiny, side), **kwargs)
    # compile=False: the task's default compile makes an optimizer; each side compiles its own
    return getattr(keras_hub.models, entry.model)(backbone=backbone, preprocessor=None,
                                                   compile=False, **entry.task_args, **kwargs)


def parameters(entry: Entry, tiny: bool) -> int:
    """The model's parameter count without allocating its weights: built in a stateless
    scope, Keras defers each variable's initialisation and keeps only its shape."""
    import keras

    # initialize_variables=False: leaving the scope would otherwise allocate them all
    with keras.StatelessScope(initialize_variables=False):
        model = make_model(entry, tiny)
    return int(sum(math.prod(v.shape) for v in model.weights))


def make_arrays(entry: Entry, shape: dict, seed: int, vocab: int, classes: int) -> dict:
    """Inputs and labels as numpy arrays, drawn from `seed`: token ids from 3 (below are
    special tokens), a full padding mask; images standard normal, channels last."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batch = shape["batch"]
    if entry.inputs == "image":
        side = entry.image_size[1 if shape.get("tiny") else 0]
        return {"images": rng.standard_normal((batch, side, side, 3)).astype("float32"),
                "labels": rng.integers(0, classes, (batch,)).astype("int32")}
    seq = min(shape["seq"], entry.max_seq)
    ids = rng.integers(3, vocab, (batch, seq)).astype("int32")
    arrays = {"token_ids": ids, "padding_mask": np.ones((batch, seq), "int32")}
    if entry.inputs == "masked-lm":  # every position predicted, as the hf suite's MLM head
        arrays["segment_ids"] = np.zeros((batch, seq), "int32")
        arrays["mask_positions"] = np.tile(np.arange(seq, dtype="int32"), (batch, 1))
        arrays["labels"] = ids.copy()
    else:  # causal LM: each position predicts the next token
        arrays["labels"] = np.concatenate([ids[:, 1:], ids[:, -1:]], axis=1)
    return arrays


def model_inputs(entry: Entry, arrays: dict):
    """What the task model is called with: the image batch, or the dict of its inputs."""
    if entry.inputs == "image":
        return arrays["images"]
    return {k: v for k, v in arrays.items() if k != "labels"}


@dataclass
class KerasTask:
    """A Keras workload instance: `make_model()` gives a model with the fixture's weights (each
    side builds its own, compiled its own way), inputs and labels as the backend's tensors."""

    entry: Entry
    make_model: Any  # (dtype=None) -> keras.Model with the shared weights loaded
    inputs: Any  # backend tensors: an image batch or a dict
    target: Any
    fixture: Any  # lab.workloads.suites.keras_fixture.Fixture
    precision: str = "fp32"
    device: str = "cpu"
    cross_backend: dict | None = None  # this backend's eager output against the fixture's


def build(entry: Entry, shape: dict, mode: str, device: str, dtype: str, seed: int) -> KerasTask:
    import keras

    from lab.workloads.suites import keras_fixture

    tiny = bool(shape.get("tiny"))
    fixture = keras_fixture.ensure(entry, shape, seed)
    arrays = fixture.arrays()
    side = arrays["images"].shape[1] if entry.inputs == "image" else None

    def fresh(dtype: str | None = None):
        model = make_model(entry, tiny, side, dtype)
        model.load_weights(str(fixture.weights_path))
        return model

    to_tensor = keras.ops.convert_to_tensor
    inputs = keras.tree.map_structure(to_tensor, model_inputs(entry, arrays))
    return KerasTask(entry=entry, make_model=fresh, inputs=inputs,
                     target=to_tensor(arrays["labels"]), fixture=fixture)


def _shape(entry: Entry):
    def default(device: str) -> dict:
        base = DEFAULT_SHAPES["cuda" if device == "cuda" else "cpu"]
        if entry.inputs == "image":  # batch norm in training needs two values per channel
            return {"batch": max(base["batch"], 2), "tiny": 0}
        return {"batch": base["batch"], "seq": min(base["seq"], entry.max_seq), "tiny": 0}

    return default


def workload(entry: Entry) -> Workload:
    text = entry.inputs != "image"
    return Workload(
        name=entry.workload_name,
        summary=f"keras_hub {entry.model} on {entry.backbone}, random weights",
        default_shape=_shape(entry),
        flops=lambda shape, mode: math.nan,  # the lab does not guess a real model's flops
        items_per_step=lambda shape: shape["batch"] * (shape.get("seq", 1) if text else 1),
        throughput_unit="tokens/s" if text else "samples/s",
        builders={"keras": lambda shape, mode, device, dtype, seed:
                  build(entry, shape, mode, device, dtype, seed)},
        check_shape=functools.partial(check_size_and_seq, entry.workload_name, entry.max_seq),
        zero_ok=("tiny",),
    )
