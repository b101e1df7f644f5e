"""GPT-2 and the Llama-style decoder: the configs in the repo are the real models, the counts
are right, the JAX decoders compute the torch models' numbers, and greedy decoding gives the
same tokens with and without a KV cache, in torch and JAX, eager and compiled."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from numerics import assert_close_scaled, decoder_chain

from lab.workloads import get
from lab.workloads.llm import config as cfg
from lab.workloads.llm import generate

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

GPT2_124M_PARAMS = 124_439_808  # GPT2LMHeadModel.from_pretrained("gpt2"), tied head
LLAMA_32_1B_PARAMS = 1_235_814_400  # meta-llama/Llama-3.2-1B, tied embeddings
FAMILIES = {"gpt2": cfg.GPT2, "llama": cfg.LLAMA}


def small(name: str, **changes) -> dict:
    """The CPU default shape, made smaller still for fast tests."""
    shape = get(name).default_shape("cpu")
    shape.update({"batch": 2, "seq": 16, "prompt": 5, "new_tokens": 6, "vocab": 512, **changes})
    return shape



def meta_model(family: cfg.Family, shape: dict):
    """The `transformers` model without memory for weights: sizes and names only."""
    import transformers

    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(cfg.hf_config(family, shape))


@pytest.mark.parametrize("name,params", [("gpt2", GPT2_124M_PARAMS),
                                         ("llama", LLAMA_32_1B_PARAMS)])
def test_cuda_defaults_are_the_real_models(name, params):
    family = FAMILIES[name]
    shape = get(name).default_shape("cuda")
    model = meta_model(family, shape)
    assert sum(p.numel() for p in model.parameters()) == params
    assert cfg.parameter_count(family, shape) == params


def test_llama_config_is_a_llama3_shape():
    config = cfg.hf_config(cfg.LLAMA, get("llama").default_shape("cuda"))
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.num_key_value_heads, config.intermediate_size, config.vocab_size) == \
        (2048, 16, 32, 8, 8192, 128256)
    assert config.head_dim == 64 and config.rms_norm_eps == 1e-5
    assert config.rope_parameters["rope_type"] == "llama3"
    assert config.rope_parameters["rope_theta"] == 500000.0


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_counts_match_the_built_model_at_other_sizes(name):
    """The analytic counts behind the flops agree with the model `transformers` builds:
    parameters, and N of the 2N-flops rule = every 2-D matmul weight plus the LM head."""
    family = FAMILIES[name]
    shape = small(name, layers=3)
    model = meta_model(family, shape)
    assert cfg.parameter_count(family, shape) == sum(p.numel() for p in model.parameters())
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    matmul_weights = sum(p.numel() for p in model.parameters()
                         if p.dim() == 2 and id(p) not in embeddings)
    head = shape["vocab"] * shape["hidden"]  # tied: the embedding matrix, used as the head
    assert cfg.matmul_params(family, shape) == matmul_weights + head


def test_flops_follow_the_token_rules():
    shape = get("llama").default_shape("cuda")
    n, tokens = cfg.matmul_params(cfg.LLAMA, shape), shape["batch"] * shape["seq"]
    infer = cfg.flops(cfg.LLAMA, shape, "infer")
    attention = 2 * 2 * shape["batch"] * shape["layers"] * shape["seq"] ** 2 * shape["hidden"]
    assert infer == 2 * n * tokens + attention
    assert cfg.flops(cfg.LLAMA, shape, "train") == 3 * infer
    # generate: ~2N per produced token, the prompt's prefill on top
    per_token = cfg.flops(cfg.LLAMA, shape, "generate") / cfg.tokens_per_step(shape, "generate")
    assert 2 * n < per_token < 2 * n * (1 + shape["prompt"])


def test_bad_sizes_are_one_clear_error():
    with pytest.raises(ValueError, match="not divisible by kv_heads"):
        cfg.hf_config_dict(cfg.LLAMA, small("llama", heads=8, kv_heads=3))
    with pytest.raises(ValueError, match="1024 learned positions"):
        cfg.hf_config_dict(cfg.GPT2, small("gpt2", seq=2048))
    with pytest.raises(ValueError, match="no shape parameter 'd_model'"):
        get("gpt2").shape_for("cpu", {"d_model": 512})


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_train_task_predicts_the_next_token(name):
    task = get(name).build("torch", small(name), "train", "cpu", "float32", 0)
    ids, target = task.inputs[0], task.target
    assert ids.shape == target.shape == (2, 16)
    assert torch.equal(ids[:, 1:], target[:, :-1])  # target = inputs shifted by one
    loss = task.loss_fn(task.model(ids), target)
    # random weights: close to the loss of a uniform guess over the vocabulary
    assert float(loss.detach()) == pytest.approx(np.log(512), rel=0.05)


def _jax():
    return pytest.importorskip("jax")


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_jax_logits_agree_with_torch(name):
    jax = _jax()
    shape = small(name)
    ref = get(name).build("torch", shape, "infer", "cpu", "float32", 0)
    with torch.no_grad():
        want = ref.model(*ref.inputs).numpy()
    task = get(name).build("jax", shape, "infer", "cpu", "float32", 0)
    got = np.asarray(jax.jit(task.apply)(task.params, *task.inputs))
    assert task.weights_source == "torch"
    # float32 through 2 layers: differences are rounding, within 6e-4 of the largest logit
    # (~1e-3 here, measured ~1e-6); a wrong op moves logits by ~1e-1
    assert_close_scaled(got, want, dtype="float32", reduction_len=decoder_chain(shape),
                        what=f"{name} logits, JAX vs torch")


def test_jax_llama_loss_and_gradients_agree_with_torch():
    """Training differentiates the same function: the loss and the gradients of the tied
    embedding (lookup + LM head) and of a GQA projection match torch's."""
    jax = _jax()
    shape = small("llama")
    ref = get("llama").build("torch", shape, "train", "cpu", "float32", 0)
    loss = ref.loss_fn(ref.model(*ref.inputs), ref.target)
    loss.backward()
    task = get("llama").build("jax", shape, "train", "cpu", "float32", 0)
    value, grads = jax.value_and_grad(
        lambda p: task.loss_fn(task.apply(p, *task.inputs), task.target))(task.params)
    lm = ref.model.lm
    assert_close_scaled(value, loss, dtype="float32",
                        reduction_len=decoder_chain(shape, "loss"), what="loss")
    # Judged at each gradient's largest element, not per element: the smallest elements are
    # cancelling sums whose last digits follow the CPU's summation order (a per-element rtol
    # failed on 1 of 131072 on an AMD EPYC). Still caught: a sign or a factor of either
    # gradient, a missing contribution (the head's or the lookup's to the tied embedding), a
    # wrong query-head group (its rows of k_proj change by their own size).
    embed = lm.model.embed_tokens.weight.grad
    assert_close_scaled(grads["embed"], embed, dtype="float32",
                        reduction_len=decoder_chain(shape, "grads"), what="embedding gradient")
    k_proj = lm.model.layers[1].self_attn.k_proj.weight.grad.T
    assert_close_scaled(grads["layers"][1]["k_proj"], k_proj, dtype="float32",
                        reduction_len=decoder_chain(shape, "grads"), what="k_proj gradient")


def _recompute_greedy(lm, prompt, steps: int):
    """Greedy decoding without a cache: the whole sequence again for every token."""
    seq = prompt
    with torch.no_grad():
        for _ in range(steps):
            logits = lm(input_ids=seq, use_cache=False).logits
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, prompt.shape[1]:].numpy()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_generate_with_cache_matches_recomputing(name):
    shape = small(name)
    task = get(name).build("torch", shape, "generate", "cpu", "float32", 0)
    first = generate.greedy_generate(task, task.model)
    tokens = generate.as_numpy(first.tokens)
    assert tokens.shape == (2, 6)
    assert first.first_token_s > 0 and first.total_s >= first.first_token_s
    np.testing.assert_array_equal(tokens, _recompute_greedy(task.model.lm, task.prompt, 6))
    # the cache is reset between generations: a second run decodes the same tokens
    np.testing.assert_array_equal(generate.as_numpy(generate.greedy_generate(
        task, task.model).tokens), tokens)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_jax_generate_matches_torch_and_traces_twice(name):
    """Greedy tokens from the jitted JAX decoder equal torch's; the jitted forward holds two
    executables after every token (prompt shape, one-token shape): no retrace per token."""
    jax = _jax()
    shape = small(name)
    ref = get(name).build("torch", shape, "generate", "cpu", "float32", 0)
    want = generate.as_numpy(generate.greedy_generate(ref, ref.model).tokens)
    task = get(name).build("jax", shape, "generate", "cpu", "float32", 0)
    jitted = jax.jit(task.model)
    got = generate.greedy_generate(task, functools.partial(jitted, task.params))
    np.testing.assert_array_equal(generate.as_numpy(got.tokens), want)
    assert jitted._cache_size() == 2


def test_torch_decode_step_compiles_once():
    """With the StaticCache the decode step keeps its shapes and guards: Dynamo compiles the
    prefill and the decode step, then nothing more for later tokens (CompileCounter counts
    graphs without running Inductor)."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    task = get("llama").build("torch", small("llama", new_tokens=8), "generate", "cpu",
                              "float32", 0)
    compiled = torch.compile(task.model, backend=counter)
    eager = generate.as_numpy(generate.greedy_generate(task, task.model).tokens)
    got = generate.as_numpy(generate.greedy_generate(task, compiled).tokens)
    np.testing.assert_array_equal(got, eager)
    assert counter.frame_count == 2


@pytest.mark.long  # a compiled GPT-2 decode: minutes on 2 cores
@pytest.mark.slow
def test_inductor_generate_gives_eager_tokens():
    """torch.compile (Inductor) of the decode forward gives eager's greedy tokens."""
    torch._dynamo.reset()
    task = get("llama").build("torch", small("llama", new_tokens=8), "generate", "cpu",
                              "float32", 0)
    eager = generate.as_numpy(generate.greedy_generate(task, task.model).tokens)
    compiled = torch.compile(task.model)
    got = generate.as_numpy(generate.greedy_generate(task, compiled).tokens)
    assert generate.first_divergence(got, eager) is None


def test_first_divergence_names_the_position():
    a = np.array([[1, 2, 3], [4, 5, 6]])
    assert generate.first_divergence(a, a.copy()) is None
    b = a.copy()
    b[1, 2] = 0
    assert generate.first_divergence(a, b) == 2


def test_lab_list_shows_small_cpu_shapes():
    for name in ("gpt2", "llama"):
        workload = get(name)
        cpu, cuda = workload.default_shape("cpu"), workload.default_shape("cuda")
        assert set(cpu) == set(cuda)
        assert cfg.parameter_count(FAMILIES[name], cpu) < cfg.parameter_count(
            FAMILIES[name], cuda) / 25
        assert workload.frameworks == ("torch", "jax")
