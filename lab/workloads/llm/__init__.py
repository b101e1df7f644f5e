"""Language-model workloads built from Hugging Face `transformers` configs with random weights.

- `config`: the real configs (`lab/workloads/configs/*.json`), the shape keys that resize them,
  parameter and flop counts.
- `torch_lm`: the `transformers` model for train / infer / generate (a `TorchTask` or a
  `GenerateTask`).
- `generate`: the greedy decode loop a backend calls with an eager or a compiled forward.
- `llama_jax`: the Llama-style decoder in plain JAX, with the torch model's weights copied in.
- `gpt2`, `llama`: the registered workloads; `varlen` (sequence length changing between steps)
  and `graph_break` (a data-dependent branch) for compiler diagnostics; `recompiles` counts
  what those two make a compiler do.

No module imports a framework at import time.
"""
