"""The real model configs, the shape keys that resize them, and their parameter and flop counts.

A workload's shape holds every size as an int (shapes are ints on the command line): the CUDA
default shape is the real config (GPT-2 124M, Llama-3.2-1B), the CPU default a small model of
the same architecture that keeps a cell to tens of seconds on 2 cores. `real_shape()` reads the
real sizes from the JSON, so the CUDA defaults cannot drift from the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class Family:
    """One architecture: its config file and how shape keys map to the config's fields."""

    name: str  # "gpt2" or "llama", the `model_type` in the JSON
    config_file: str  # under lab/workloads/configs
    # shape key -> the field of the HF config it sets
    size_fields: dict[str, str]


GPT2 = Family("gpt2", "gpt2-124m.json",
              {"layers": "n_layer", "hidden": "n_embd", "heads": "n_head",
               "vocab": "vocab_size"})
LLAMA = Family("llama", "llama-3.2-1b.json",
               {"layers": "num_hidden_layers", "hidden": "hidden_size",
                "heads": "num_attention_heads", "kv_heads": "num_key_value_heads",
                "ffn": "intermediate_size", "vocab": "vocab_size"})

# Run keys beside the model sizes: tokens per training/prefill row, and for `generate` the
# prompt length and the fixed number of greedy new tokens that tokens/s is measured over.
CUDA_RUN = {"gpt2": {"batch": 8, "seq": 1024, "prompt": 16, "new_tokens": 200},
            # batch 4: a float32 AdamW step of the 1.24B model with a 128k vocabulary needs
            # ~40 GB at seq 1024; batch 8 would not leave room on an 80 GB card
            "llama": {"batch": 4, "seq": 1024, "prompt": 16, "new_tokens": 200}}
# CPU: two layers, width 256, vocabulary 8192; head_dim 64 (GPT-2) and 32 with 4 query heads
# per KV head (Llama-3.2-1B has 4 too), so the architecture's ratios are kept.
CPU_SIZES = {"gpt2": {"layers": 2, "hidden": 256, "heads": 4, "vocab": 8192},
             "llama": {"layers": 2, "hidden": 256, "heads": 8, "kv_heads": 2, "ffn": 1024,
                       "vocab": 8192}}
CPU_RUN = {"batch": 2, "seq": 128, "prompt": 16, "new_tokens": 32}


def config_dict(family: Family) -> dict:
    """The config as written in the repo (the Hugging Face config.json of the real model)."""
    return dict(_read_config(family.config_file))


@cache
def _read_config(file_name: str) -> dict:
    with open(CONFIG_DIR / file_name) as f:
        return json.load(f)


def real_shape(family: Family) -> dict:
    raw = config_dict(family)
    return {key: int(raw[field]) for key, field in family.size_fields.items()}


def default_shape(family: Family, device: str) -> dict:
    if device == "cuda":
        return {**CUDA_RUN[family.name], **real_shape(family)}
    return {**CPU_RUN, **CPU_SIZES[family.name]}


def check_shape(family: Family, shape: dict) -> None:
    """One clear ValueError for sizes the architecture cannot take."""
    if shape["hidden"] % shape["heads"]:
        raise ValueError(f"hidden={shape['hidden']} is not divisible by heads={shape['heads']}")
    if family is LLAMA and shape["heads"] % shape["kv_heads"]:
        raise ValueError(f"heads={shape['heads']} is not divisible by kv_heads="
                         f"{shape['kv_heads']} (grouped-query attention)")
    if min(v for v in shape.values()) < 1:
        raise ValueError(f"every shape value must be positive: {shape}")
    longest = max(shape["seq"], shape["prompt"] + shape["new_tokens"])
    field, what = CONTEXT[family.name]
    positions = int(config_dict(family)[field])
    if longest > positions:
        raise ValueError(f"{family.name} has {positions} {what}; seq and prompt + new_tokens "
                         f"must not exceed it (got {longest})")


# the config field that holds the model's context: GPT-2's learned positions, Llama's RoPE range
CONTEXT = {"gpt2": ("n_positions", "learned positions"),
           "llama": ("max_position_embeddings", "positions (its RoPE range)")}


def shape_problem(family: Family, shape: dict) -> str | None:
    """check_shape's reason as one line, or None: what the selection asks before any cell."""
    try:
        check_shape(family, shape)
    except ValueError as exc:
        return str(exc)
    return None


def hf_config_dict(family: Family, shape: dict) -> dict:
    """The repo's config with the shape's sizes applied; dropout off.

    Dropout is zeroed because the lab compares a compiled step with an eager one on the same
    inputs: two dropout masks would make every training comparison fail (Llama's config has no
    dropout anyway). `head_dim` follows hidden / heads, as it does in the real config."""
    check_shape(family, shape)
    raw = dict(config_dict(family))
    for key, field in family.size_fields.items():
        raw[field] = shape[key]
    for field in ("attn_pdrop", "embd_pdrop", "resid_pdrop", "attention_dropout"):
        if field in raw:
            raw[field] = 0.0
    if family is LLAMA:
        raw["head_dim"] = shape["hidden"] // shape["heads"]
    # a small vocabulary has no room for the real special tokens; decoding runs a fixed
    # number of tokens and never stops at one
    for field in ("bos_token_id", "eos_token_id"):
        if isinstance(raw.get(field), int) and raw[field] >= shape["vocab"]:
            raw[field] = None
    return raw


def hf_config(family: Family, shape: dict):
    """A `transformers` config object (GPT2Config or LlamaConfig)."""
    import transformers

    cls = {"gpt2": transformers.GPT2Config, "llama": transformers.LlamaConfig}[family.name]
    return cls.from_dict(hf_config_dict(family, shape))


# ---------------------------------------------------------------- counts

def _layer_matmul_params(family: Family, shape: dict) -> int:
    h = shape["hidden"]
    if family is GPT2:
        return h * 3 * h + h * h + 2 * h * 4 * h  # c_attn, attn c_proj, mlp c_fc and c_proj
    hd = h // shape["heads"]
    q = o = h * shape["heads"] * hd
    kv = 2 * h * shape["kv_heads"] * hd
    return q + kv + o + 3 * h * shape["ffn"]  # q, k, v, o; gate, up, down


def parameter_count(family: Family, shape: dict) -> int:
    """Trainable parameters (tied embeddings counted once), as `model.parameters()` counts."""
    h, v, n = shape["hidden"], shape["vocab"], shape["layers"]
    raw = config_dict(family)
    if family is GPT2:
        biases_and_norms = 3 * h + h + 4 * h + h + 2 * 2 * h  # linear biases, ln_1, ln_2
        per_layer = _layer_matmul_params(family, shape) + biases_and_norms
        return v * h + int(raw["n_positions"]) * h + n * per_layer + 2 * h  # wte, wpe, ln_f
    per_layer = _layer_matmul_params(family, shape) + 2 * h  # two RMSNorm weights
    head = 0 if raw.get("tie_word_embeddings") else v * h
    return v * h + n * per_layer + h + head


def matmul_params(family: Family, shape: dict) -> int:
    """N in the 2N-flops-per-token rule: every weight used in a matmul, the LM head included
    (it is computed even when tied to the embedding); embedding lookups cost no flops."""
    return shape["layers"] * _layer_matmul_params(family, shape) + shape["vocab"] * shape["hidden"]


def _attention_flops(family: Family, shape: dict, rows: int, queries: int, keys: int) -> float:
    """q @ k^T and p @ v for `queries` x `keys` per row and layer: 2 matmuls x 2 flops."""
    return 2.0 * 2 * rows * shape["layers"] * queries * keys * shape["hidden"]


def flops(family: Family, shape: dict, mode: str) -> float:
    """Flops per step.

    infer: 2 N per token + attention (the full seq x seq score matrix, as a dense kernel
    computes it; a causal flash kernel skips about half). train: 3x the forward (backward is
    twice the forward), i.e. 6 N per token + 3x attention; AdamW's elementwise update is not
    counted. generate: the prefill over the prompt (LM head on its last token only) plus one
    token per decode step attending to the tokens before it.
    """
    b, t, n = shape["batch"], shape["seq"], matmul_params(family, shape)
    if mode in ("infer", "train"):
        forward = 2.0 * n * b * t + _attention_flops(family, shape, b, t, t)
        return forward if mode == "infer" else 3 * forward
    if mode != "generate":
        raise ValueError(f"unknown mode {mode!r}")
    p, new = shape["prompt"], shape["new_tokens"]
    head = shape["vocab"] * shape["hidden"]
    total = 2.0 * (n - head) * b * p + 2.0 * head * b + _attention_flops(family, shape, b, p, p)
    for context in range(p + 1, p + new):  # decode steps after the prefill's first token
        total += 2.0 * n * b + _attention_flops(family, shape, b, 1, context)
    return total


def tokens_per_step(shape: dict, mode: str) -> int:
    """Tokens a step processes (train, infer) or produces (generate)."""
    if mode == "generate":
        return shape["batch"] * shape["new_tokens"]
    return shape["batch"] * shape["seq"]


def footprint(family: Family, shape: dict, mode: str):
    """The memory estimate's inputs (lab.workloads.footprint): parameters from the config;
    activations kept for backward per layer and token after Korthikanti et al. 2022 ("Reducing
    Activation Recomputation", section 4.1) less its dropout masks and outputs (dropout is off
    here): 16 h elements (8 h of them the 4h MLP's, scaled here to the config's ffn) and the
    softmax's heads x seq, kept whole as eager attention keeps it; the logits (tokens x vocab)
    in float32, three copies in training (logits, their float32 upcast for the loss, its
    gradient), one in inference. A forward without backward keeps about one layer live.
    generate: the KV cache (2 x layers x batch x context x kv width) and the prefill's forward
    at the prompt's length."""
    from ..base import Footprint

    h, layers, heads = shape["hidden"], shape["layers"], shape["heads"]
    ffn = shape.get("ffn", 4 * h)
    kv_width = h // heads * shape.get("kv_heads", heads)

    def forward(tokens: int, seq: int, kept_layers: int) -> float:
        per_layer = tokens * (8 * h + 2 * ffn) + heads * seq * tokens
        return kept_layers * per_layer

    params = parameter_count(family, shape)
    b = shape["batch"]
    if mode == "generate":
        p, new = shape["prompt"], shape["new_tokens"]
        cache = 2 * layers * b * (p + new) * kv_width
        return Footprint(params, cache + forward(b * p, p, 1), b * p * shape["vocab"])
    tokens = b * shape["seq"]
    train = mode == "train"
    return Footprint(params, forward(tokens, shape["seq"], layers if train else 1),
                     (3 if train else 1) * tokens * shape["vocab"], optimizer="adamw")
