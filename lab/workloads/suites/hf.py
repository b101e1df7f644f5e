"""The Hugging Face suite: `transformers` architectures built from their config classes with
random weights (never from the hub), each with the task head PyTorch's dynamo benchmark
harness (benchmarks/dynamo/huggingface.py) runs it with, inputs of the right kind and the
model's own loss from labels, as the harness computes it.

Two sizes, chosen by the shape key `tiny`: 0 (the default) is the config's real size, the
class's defaults where they are a published checkpoint's (bert-base, t5-small, vit-base...);
where the defaults are larger than a 24 GiB CPU can hold in float32 (Llama and Mistral's 7B,
Gemma's 7B, Mixtral's 8x7B) the family's smallest published size, or, where there is none
small enough, a scaled config whose `note` says so. 1 is a tiny config (two layers, width
64) that keeps a cell to seconds on a 2-core CPU: for tests, and to check that every model
compiles at all.

A model is wrapped in `SuiteModel`, which takes positional tensors (the lab's task shape) and
returns every tensor of the model's ModelOutput, flattened in its order: the loss first
(labels are among the inputs, in infer mode too, as in the harness), then the logits and the
rest, so accuracy is judged on all of them. Dropout, stochastic depth, layer drop and
SpecAugment masking are set to 0: a random mask would make two eager steps disagree and leave
nothing to compare a compiled step with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lab.workloads.base import TorchTask, Workload
from lab.workloads.suites import check_size_and_seq

SUITE = "hf"
# the probabilities that make a training step random, zeroed in every config and sub-config
# (GPT-2 names its dropouts resid_pdrop, embd_pdrop, attn_pdrop)
RANDOM_KEYS = ("dropout", "pdrop", "drop_path", "layerdrop", "mask_time_prob",
               "mask_feature_prob")
# CPU: a real-size cell within a couple of minutes on 2 cores (the harness uses batch 1 for
# the largest models on the CPU too); CUDA: the harness's order of magnitude
DEFAULT_SHAPES = {"cpu": {"batch": 1, "seq": 128}, "cuda": {"batch": 8, "seq": 512}}
TINY_TEXT = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128, max_position_embeddings=512)
TINY_DECODER = dict(TINY_TEXT, num_key_value_heads=2)
TINY_SEQ2SEQ = dict(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2,
                    encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                    decoder_ffn_dim=128, max_position_embeddings=512)
TINY_VIT = dict(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2,
                num_attention_heads=2, intermediate_size=128, num_labels=10)
IMAGENET = dict(num_labels=1000)  # the harness's vision heads: ImageNet's classes


@dataclass(frozen=True)
class Entry:
    """One model of the suite: its config and head classes (names in `transformers`), the
    kind of inputs it takes, and the config settings of each size."""

    name: str
    group: str  # encoder, decoder, encoder-decoder, vision, speech, multimodal
    config: str
    model: str
    task: str  # masked-lm, causal-lm, seq2seq-lm, image-classification, ctc, contrastive
    inputs: str  # text, seq2seq, image, audio-features, audio-values, text-image
    tiny: dict
    real: dict = field(default_factory=dict)
    note: str = ""
    image_size: tuple[int, int] = (224, 32)  # (real, tiny) side of a square image
    max_seq: int = 512  # the longest sequence the real config takes

    @property
    def workload_name(self) -> str:
        return f"{SUITE}/{self.name}"


ENTRIES = [
    # encoders: masked language modelling, as the harness runs them
    Entry("bert", "encoder", "BertConfig", "BertForMaskedLM", "masked-lm", "text", TINY_TEXT),
    Entry("roberta", "encoder", "RobertaConfig", "RobertaForMaskedLM", "masked-lm", "text",
          TINY_TEXT, dict(vocab_size=50265, max_position_embeddings=514)),
    Entry("distilbert", "encoder", "DistilBertConfig", "DistilBertForMaskedLM", "masked-lm",
          "text", dict(vocab_size=1000, dim=64, n_layers=2, n_heads=2, hidden_dim=128)),
    Entry("albert", "encoder", "AlbertConfig", "AlbertForMaskedLM", "masked-lm", "text",
          dict(TINY_TEXT, embedding_size=32),
          dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072),
          note="albert-base-v2's size (the class's defaults are xxlarge)"),
    Entry("electra", "encoder", "ElectraConfig", "ElectraForMaskedLM", "masked-lm", "text",
          dict(TINY_TEXT, embedding_size=64)),
    Entry("deberta-v2", "encoder", "DebertaV2Config", "DebertaV2ForMaskedLM", "masked-lm",
          "text", TINY_TEXT,
          dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
               intermediate_size=3072, vocab_size=128100, relative_attention=True,
               position_buckets=256, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
               position_biased_input=False, norm_rel_ebd="layer_norm", share_att_key=True),
          note="deberta-v3-base's size"),
    Entry("mobilebert", "encoder", "MobileBertConfig", "MobileBertForMaskedLM", "masked-lm",
          "text", dict(TINY_TEXT, embedding_size=32, intra_bottleneck_size=32,
                       true_hidden_size=32, num_feedforward_networks=2)),
    # decoders: causal language modelling, labels = the inputs (the model shifts them)
    Entry("gpt2", "decoder", "GPT2Config", "GPT2LMHeadModel", "causal-lm", "text", TINY_TEXT),
    Entry("gpt-neo", "decoder", "GPTNeoConfig", "GPTNeoForCausalLM", "causal-lm", "text",
          dict(TINY_TEXT, attention_types=[[["global", "local"], 1]], window_size=16),
          dict(hidden_size=768, num_layers=12, num_heads=12,
               attention_types=[[["global", "local"], 6]]),
          note="gpt-neo-125m's size"),
    Entry("opt", "decoder", "OPTConfig", "OPTForCausalLM", "causal-lm", "text",
          dict(TINY_TEXT, ffn_dim=128, word_embed_proj_dim=64)),
    Entry("bloom", "decoder", "BloomConfig", "BloomForCausalLM", "causal-lm", "text",
          dict(vocab_size=1000, hidden_size=64, n_layer=2, n_head=2),
          dict(hidden_size=1024, n_layer=24, n_head=16), note="bloom-560m's size"),
    Entry("llama", "decoder", "LlamaConfig", "LlamaForCausalLM", "causal-lm", "text",
          TINY_DECODER,
          dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
               tie_word_embeddings=True, max_position_embeddings=2048),
          note="Llama-3.2-1B's size"),
    Entry("mistral", "decoder", "MistralConfig", "MistralForCausalLM", "causal-lm", "text",
          TINY_DECODER,
          dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048),
          note="scaled to 0.85B (the smallest published Mistral is 7B: 29 GB in float32)"),
    Entry("qwen2", "decoder", "Qwen2Config", "Qwen2ForCausalLM", "causal-lm", "text",
          TINY_DECODER,
          dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
               num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
               tie_word_embeddings=True, max_position_embeddings=2048),
          note="Qwen2-0.5B's size"),
    Entry("phi", "decoder", "PhiConfig", "PhiForCausalLM", "causal-lm", "text", TINY_TEXT,
          note="phi-1.5's size (the class's defaults)"),
    Entry("gemma", "decoder", "GemmaConfig", "GemmaForCausalLM", "causal-lm", "text",
          dict(TINY_DECODER, head_dim=32),
          dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
               num_attention_heads=8, num_key_value_heads=1, head_dim=256,
               max_position_embeddings=2048),
          note="Gemma-2B's size"),
    Entry("mixtral", "decoder", "MixtralConfig", "MixtralForCausalLM", "causal-lm", "text",
          dict(TINY_DECODER, num_local_experts=4, num_experts_per_tok=2),
          dict(hidden_size=1024, intermediate_size=3584, num_hidden_layers=8,
               num_attention_heads=16, num_key_value_heads=8, num_local_experts=8,
               num_experts_per_tok=2, max_position_embeddings=2048),
          note="scaled to 0.8B, 8 experts, top-2 (the smallest published Mixtral is 8x7B)"),
    # encoder-decoders: conditional generation with labels (the decoder's inputs are the
    # labels shifted right, made by the model)
    Entry("t5", "encoder-decoder", "T5Config", "T5ForConditionalGeneration", "seq2seq-lm",
          "seq2seq", dict(vocab_size=1000, d_model=64, d_kv=32, d_ff=128, num_layers=2,
                          num_heads=2, decoder_start_token_id=0),
          dict(decoder_start_token_id=0), note="t5-small's size (the class's defaults)"),
    Entry("bart", "encoder-decoder", "BartConfig", "BartForConditionalGeneration",
          "seq2seq-lm", "seq2seq", TINY_SEQ2SEQ, note="bart-large's size"),
    Entry("pegasus", "encoder-decoder", "PegasusConfig", "PegasusForConditionalGeneration",
          "seq2seq-lm", "seq2seq", TINY_SEQ2SEQ, note="pegasus-large's size"),
    Entry("m2m100", "encoder-decoder", "M2M100Config", "M2M100ForConditionalGeneration",
          "seq2seq-lm", "seq2seq", TINY_SEQ2SEQ, note="m2m100_418M's size"),
    Entry("marian", "encoder-decoder", "MarianConfig", "MarianMTModel", "seq2seq-lm",
          "seq2seq", dict(TINY_SEQ2SEQ, decoder_vocab_size=1000, pad_token_id=999,
               decoder_start_token_id=999),
          dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
               decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048),
          note="opus-mt's size"),
    # vision: ImageNet classification
    Entry("vit", "vision", "ViTConfig", "ViTForImageClassification", "image-classification",
          "image", TINY_VIT, IMAGENET),
    Entry("deit", "vision", "DeiTConfig", "DeiTForImageClassification",
          "image-classification", "image", TINY_VIT, IMAGENET),
    Entry("beit", "vision", "BeitConfig", "BeitForImageClassification",
          "image-classification", "image", TINY_VIT, IMAGENET),
    Entry("swin", "vision", "SwinConfig", "SwinForImageClassification",
          "image-classification", "image",
          dict(image_size=32, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
               window_size=4, num_labels=10), IMAGENET),
    Entry("convnext", "vision", "ConvNextConfig", "ConvNextForImageClassification",
          "image-classification", "image",
          dict(image_size=32, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
               num_labels=10), IMAGENET),
    Entry("resnet", "vision", "ResNetConfig", "ResNetForImageClassification",
          "image-classification", "image",
          dict(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
               num_labels=10), IMAGENET, note="resnet-50's size"),
    Entry("mobilenet-v2", "vision", "MobileNetV2Config", "MobileNetV2ForImageClassification",
          "image-classification", "image",
          dict(image_size=32, depth_multiplier=0.35, num_labels=10), IMAGENET),
    Entry("levit", "vision", "LevitConfig", "LevitForImageClassification",
          "image-classification", "image",
          dict(image_size=64, hidden_sizes=[32, 48, 64], num_attention_heads=[1, 2, 2],
               depths=[1, 1, 1], key_dim=[8, 8, 8],
               down_ops=[["Subsample", 8, 32 // 8, 4, 2, 2], ["Subsample", 8, 48 // 8, 4, 2, 2]],
               num_labels=10), IMAGENET, note="levit-128S's size", image_size=(224, 64)),
    # speech
    Entry("whisper", "speech", "WhisperConfig", "WhisperForConditionalGeneration",
          "seq2seq-lm", "audio-features",
          dict(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2,
               encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
               decoder_ffn_dim=128, max_source_positions=64, max_target_positions=512,
               decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=2),
          note="whisper-tiny's size (the class's defaults)", max_seq=448),
    Entry("wav2vec2", "speech", "Wav2Vec2Config", "Wav2Vec2ForCTC", "ctc", "audio-values",
          dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=128, conv_dim=[32, 32, 32, 32, 32, 32, 32],
               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2),
          note="wav2vec2-base's size"),
    # multimodal: CLIP's contrastive loss over a batch of text and image pairs
    Entry("clip", "multimodal", "CLIPConfig", "CLIPModel", "contrastive", "text-image",
          dict(text_config=dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=128,
                                max_position_embeddings=77),
               vision_config=dict(image_size=32, patch_size=4, hidden_size=64,
                                  num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=128),
               projection_dim=32),
          note="clip-vit-base-patch32's size", max_seq=77),
]
BY_NAME = {e.workload_name: e for e in ENTRIES}
CTC_LABELS = 8  # target tokens per clip: fewer than the ~49 frames of a second of audio
AUDIO_SAMPLES = 16000  # one second at 16 kHz


def _zero_randomness(config) -> None:
    """Every probability that makes a step random set to 0, in sub-configs too (CLIP's)."""
    from transformers import PretrainedConfig

    for key, value in list(vars(config).items()):
        if isinstance(value, PretrainedConfig):
            _zero_randomness(value)
        elif isinstance(value, float) and any(k in key for k in RANDOM_KEYS):
            setattr(config, key, 0.0)
    if hasattr(config, "use_cache"):
        config.use_cache = False  # one step, no generation: a cache is only more outputs


def make_config(entry: Entry, tiny: bool):
    import transformers

    cls = getattr(transformers, entry.config)
    return cls(**(entry.tiny if tiny else entry.real))


def make_model(entry: Entry, tiny: bool):
    import transformers

    config = make_config(entry, tiny)
    _zero_randomness(config)
    if entry.task == "image-classification":
        # what the loss sets on its first call for integer labels over several classes: left
        # unset, a compiled model's guard on it fails on the second call (one recompile)
        config.problem_type = "single_label_classification"
    return getattr(transformers, entry.model)(config)


def text_config(config):
    return getattr(config, "text_config", None) or config


def _vocab(config) -> int:
    return int(text_config(config).vocab_size)


def _image_side(entry: Entry, config, tiny: bool) -> int:
    vision = getattr(config, "vision_config", None) or config
    return int(getattr(vision, "image_size", None) or entry.image_size[1 if tiny else 0])


def make_inputs(entry: Entry, config, shape: dict, generator) -> dict:
    """The model's keyword inputs for `shape`, from `generator` (a seeded torch.Generator):
    token ids and labels within the vocabulary, images and audio as standard normal values."""
    import torch

    batch, tiny = shape["batch"], bool(shape.get("tiny"))
    seq = min(shape.get("seq", 1), entry.max_seq)

    def ids(length: int, high: int) -> torch.Tensor:
        # from 3: below are the special tokens (pad, bos, eos) some models treat apart
        return torch.randint(3, high, (batch, length), generator=generator)

    if entry.inputs == "text":
        tokens = ids(seq, _vocab(config))
        return {"input_ids": tokens, "labels": tokens.clone()}
    if entry.inputs == "seq2seq":
        return {"input_ids": ids(seq, _vocab(config)), "labels": ids(seq, _vocab(config))}
    if entry.inputs == "image":
        side = _image_side(entry, config, tiny)
        return {"pixel_values": torch.randn(batch, config.num_channels, side, side,
                                            generator=generator),
                "labels": torch.randint(0, config.num_labels, (batch,), generator=generator)}
    if entry.inputs == "audio-features":  # log-mel frames: twice the encoder's positions
        frames = 2 * config.max_source_positions
        return {"input_features": torch.randn(batch, config.num_mel_bins, frames,
                                              generator=generator),
                "labels": ids(min(seq, config.max_target_positions), _vocab(config))}
    if entry.inputs == "audio-values":
        return {"input_values": torch.randn(batch, AUDIO_SAMPLES, generator=generator),
                "labels": torch.randint(1, config.vocab_size, (batch, CTC_LABELS),
                                        generator=generator)}
    if entry.inputs == "text-image":
        side = _image_side(entry, config, tiny)
        return {"input_ids": ids(seq, _vocab(config)),
                "pixel_values": torch.randn(batch, 3, side, side, generator=generator),
                "return_loss": None}  # a flag, not a tensor: set by SuiteModel
    raise ValueError(f"unknown input kind {entry.inputs!r}")


def _flatten(out) -> list:
    """Every tensor of a model's output in its order: ModelOutput (an ordered dict), tuples,
    nested outputs (CLIP's text and vision outputs)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _flatten(v)]
    return []


def suite_model_class():
    import torch

    class SuiteModel(torch.nn.Module):
        """A transformers model called with positional tensors, as the lab's backends call
        models, returning its output's tensors as a tuple (the loss first)."""

        def __init__(self, model, names: list[str], flags: dict):
            super().__init__()
            self.model, self.names, self.flags = model, list(names), dict(flags)

        def forward(self, *tensors):
            named = dict(zip(self.names, tensors, strict=True))
            out = self.model(**named, **self.flags, return_dict=True)
            return tuple(_flatten(out))

    return SuiteModel


def _loss(output, _target):
    return output[0]  # the model's own loss, computed from the labels among the inputs


def build(entry: Entry, shape: dict, mode: str, device: str, dtype: str,
          seed: int) -> TorchTask:
    import torch

    torch.manual_seed(seed)
    tiny = bool(shape.get("tiny"))
    model = make_model(entry, tiny)
    generator = torch.Generator().manual_seed(seed)
    kwargs = make_inputs(entry, model.config, shape, generator)
    flags = {k: True for k, v in kwargs.items() if v is None}  # return_loss
    tensors = {k: v for k, v in kwargs.items() if v is not None}
    dt = getattr(torch, dtype)
    wrapped = suite_model_class()(model, list(tensors), flags).to(device=device, dtype=dt)
    wrapped.train(mode == "train")
    inputs = tuple(t.to(device=device, dtype=dt) if t.is_floating_point() else t.to(device)
                   for t in tensors.values())
    return TorchTask(model=wrapped, inputs=inputs, target=None, loss_fn=_loss,
                     optimizer="sgd")


def parameters(entry: Entry, tiny: bool) -> int:
    """The model's parameter count, from a build on the meta device (no memory, no init)."""
    import torch

    with torch.device("meta"):
        model = make_model(entry, tiny)
    return sum(p.numel() for p in model.parameters())


def _shape(entry: Entry):
    def default(device: str) -> dict:
        base = DEFAULT_SHAPES["cuda" if device == "cuda" else "cpu"]
        # a contrastive loss over one pair is constant, and batch norm in training needs two
        # values per channel: CLIP and the vision models take two at least
        batch = max(base["batch"], 2) if entry.inputs in ("image", "text-image") \
            else base["batch"]
        shape = {"batch": batch, "tiny": 0}
        if entry.inputs not in ("image", "audio-values"):  # these have no sequence to set
            shape["seq"] = min(base["seq"], entry.max_seq)
        return shape

    return default


def _check(entry: Entry):
    def check(shape: dict) -> str | None:
        problem = check_size_and_seq(entry.workload_name, entry.max_seq, shape)
        if problem:
            return problem
        if entry.task == "contrastive" and shape["batch"] < 2:
            return f"{entry.workload_name}: a contrastive loss needs a batch of 2 or more"
        return None

    return check


def _items(entry: Entry):
    def items(shape: dict) -> int:
        return shape["batch"] * (shape.get("seq", 1) if entry.inputs in ("text", "seq2seq")
                                 else 1)

    return items


def workload(entry: Entry) -> Workload:
    text = entry.inputs in ("text", "seq2seq")
    return Workload(
        name=entry.workload_name,
        summary=f"{entry.model} ({entry.task}), random weights from {entry.config}",
        default_shape=_shape(entry),
        flops=lambda shape, mode: math.nan,  # the lab does not guess a real model's flops
        items_per_step=_items(entry),
        throughput_unit="tokens/s" if text else "samples/s",
        builders={"torch": lambda shape, mode, device, dtype, seed:
                  build(entry, shape, mode, device, dtype, seed)},
        check_shape=_check(entry),
        zero_ok=("tiny",),
    )
