"""Token ids of more than two dimensions (`[batch, choices, seq]`, multiple choice)."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMultipleChoice, BertTokenizer

import nnsight_lab as nnsight
from nnsight_lab import TransformersModel


@pytest.fixture()
def tokenizer(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\nother\n")
    return BertTokenizer(vocab_file=str(vocab))


@torch.no_grad()
def test_choice_ids_get_a_mask_per_token_and_match_transformers(tokenizer):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_dropout_prob=0,
        attention_probs_dropout_prob=0,
    )
    module = BertForMultipleChoice(config).eval()
    with pytest.warns(nnsight.MovedNameWarning):  # BERT's `output` submodules
        model = TransformersModel(module, task="fill-mask", tokenizer=tokenizer, device="cpu")
    ids = torch.tensor([[[2, 5, 6, 3], [2, 7, 6, 3]]])  # [batch, choices, seq]
    with model.trace(ids):
        received = nnsight.save(model.inputs[1])
        logits = nnsight.save(model.output.logits)
    assert received["attention_mask"].shape == ids.shape
    assert bool(received["attention_mask"].all())
    torch.testing.assert_close(logits, module(input_ids=ids).logits)
