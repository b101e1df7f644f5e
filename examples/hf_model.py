"""A Hugging Face model as a user workload (README "Your own model"): random weights from a
small config, keyword inputs, and labels so that train mode runs on the model's own loss.

    .venv/bin/lab run --workload examples/hf_model.py:make_bert \
        --backend torch-eager,torch-compile --mode infer,train
"""

import torch
from transformers import BertConfig, BertForSequenceClassification


def make_bert():
    config = BertConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                        intermediate_size=256, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # dropout: train cells would differ
    ids = torch.randint(0, config.vocab_size, (8, 64))
    return BertForSequenceClassification(config), {
        "input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.zeros(8).long()}
