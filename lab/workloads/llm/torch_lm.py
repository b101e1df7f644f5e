"""The `transformers` model of a config, with random weights, as the lab's torch tasks.

The Hugging Face model returns a `ModelOutput`; the lab's backends time `model(*inputs)` and
compare its outputs, so thin wrappers return the logits tensor: `LogitsOnly` for train and
infer (next-token logits of every position), `LastTokenLogits` for generate (the last
position's logits, with the KV cache passed in). Weights are drawn by `transformers`' own
initialisers (normal, std = initializer_range) under `torch.manual_seed(seed)`; nothing is
downloaded.
"""

from __future__ import annotations

from ..base import GenerateTask, TorchTask
from . import config as cfg


def _wrappers():
    import torch.nn as nn

    class LogitsOnly(nn.Module):
        """`lm(ids).logits`: (batch, seq, vocab). The cache is off: a training or prefill
        forward does not need one, and building one would be timed as part of the step."""

        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, ids):
            return self.lm(input_ids=ids, use_cache=False).logits

    class LastTokenLogits(nn.Module):
        """`lm(ids, cache)` for decoding: logits of the last position only (logits_to_keep=1
        spares the LM head on every prompt position), the cache updated in place."""

        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, ids, cache):
            return self.lm(input_ids=ids, past_key_values=cache, use_cache=True,
                           logits_to_keep=1).logits

    return LogitsOnly, LastTokenLogits


def build_lm(family: cfg.Family, shape: dict, device: str, dtype: str, seed: int):
    """The `transformers` causal LM of the config resized by `shape`, random weights."""
    import torch
    import transformers

    torch.manual_seed(seed)
    # sdpa: PyTorch's fused attention, what `transformers` picks by default and what
    # torch.compile traces through
    lm = transformers.AutoModelForCausalLM.from_config(cfg.hf_config(family, shape),
                                                       attn_implementation="sdpa")
    return lm.to(device=device, dtype=getattr(torch, dtype))


def token_data(shape: dict, vocab: int, seed: int, rows: int, length: int):
    """Uniform random token ids (rows, length), from their own generator so the same ids come
    out whatever the model's size."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, vocab, (rows, length), generator=gen)


def next_token_loss(logits, target):
    """Mean cross-entropy of each position's logits against the next token."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1))


# What language models are trained with: AdamW (decoupled weight decay), implemented alike by
# lab.compile.torch (torch.optim.AdamW) and lab.compile.jax (the same update written out)
TRAIN_OPTIMIZER = "adamw"


def build_task(family: cfg.Family, shape: dict, mode: str, device: str, dtype: str, seed: int):
    """A TorchTask for train / infer, a GenerateTask for generate."""
    lm = build_lm(family, shape, device, dtype, seed)
    lm.train(mode == "train")  # dropout is off either way (config.hf_config_dict)
    if mode == "generate":
        return generate_task(lm, shape, seed)
    logits_only, _ = _wrappers()
    # seq + 1 tokens per row: the model reads the first seq, each position predicts the next
    tokens = token_data(shape, shape["vocab"], seed, shape["batch"], shape["seq"] + 1)
    tokens = tokens.to(device)
    return TorchTask(model=logits_only(lm), inputs=(tokens[:, :-1].contiguous(),),
                     target=tokens[:, 1:].contiguous(), loss_fn=next_token_loss,
                     optimizer=TRAIN_OPTIMIZER)


def generate_task(lm, shape: dict, seed: int) -> GenerateTask:
    """Greedy decoding with `transformers`' StaticCache: fixed-size key/value tensors and a
    position counter held in a tensor, so the decode step has the same shapes and guards at
    every token and torch.compile (reduce-overhead: CUDA graphs) compiles it once, as in
    `transformers`' torch.compile generation guide and gpt-fast."""
    import torch
    import transformers

    _, last_token_logits = _wrappers()
    model = last_token_logits(lm.eval())
    device = next(lm.parameters()).device
    prompt = token_data(shape, shape["vocab"], seed, shape["batch"], shape["prompt"]).to(device)
    cache = transformers.StaticCache(config=lm.config,
                                     max_cache_len=shape["prompt"] + shape["new_tokens"])

    def new_cache():
        cache.reset()  # zeroes the tensors in place and the position counter
        return cache

    def next_logits(forward, ids, kv):
        with torch.no_grad():
            return forward(ids, kv)[:, -1], kv

    def step(forward, ids, kv):
        logits, kv = next_logits(forward, ids, kv)
        return logits.argmax(dim=-1, keepdim=True), kv

    return GenerateTask(model=model, prompt=prompt, max_new_tokens=shape["new_tokens"],
                        new_cache=new_cache, step=step, next_logits=next_logits,
                        framework="torch",
                        # copying the (batch, 1) token to the host waits for it on any device
                        sync=lambda token: token.cpu())
