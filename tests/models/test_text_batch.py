"""`TransformersModel` inputs beyond token ids: per-row fields padded into one batch,
tasks other than text generation, multiple-choice ids (`[batch, choices, seq]`), against
the plain transformers models run alone."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForSequenceClassification,
    BertTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
)

import nnsight_lab as nnsight
from nnsight_lab import TransformersModel

# BERT has submodules named `output`, reached as `.E_output` (a MovedNameWarning says so).
pytestmark = pytest.mark.filterwarnings("ignore::nnsight_lab.MovedNameWarning")


@pytest.fixture()
def tokenizer(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\nother\n")
    return BertTokenizer(vocab_file=str(vocab))


def _bert_config() -> BertConfig:
    return BertConfig(
        vocab_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_dropout_prob=0,
        attention_probs_dropout_prob=0,
    )


@pytest.fixture()
def bert(tokenizer):
    torch.manual_seed(0)
    module = BertForMaskedLM(_bert_config()).eval()
    return TransformersModel(module, task="fill-mask", tokenizer=tokenizer, device="cpu")


@pytest.fixture()
def causal(tokenizer):
    torch.manual_seed(0)
    module = GPT2LMHeadModel(GPT2Config(vocab_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    return TransformersModel(module, task="text-generation", tokenizer=tokenizer)


def _batch(model, *invokes):
    with model.trace() as tracer:
        for args, kwargs in invokes:
            with tracer.invoke(*args, **kwargs):
                pass
        with tracer.invoke():
            received = nnsight.save(model.inputs[1])
            output = nnsight.save(model.output)
    return received, output


@torch.no_grad()
def test_a_fill_mask_model_keeps_its_task_and_the_tokenizers_side(bert):
    assert bert.task == "fill-mask" and bert.tokenizer.padding_side == "right"
    encoding = bert.tokenizer("hello", "world", return_tensors="pt")
    plain = bert._module(**encoding).logits
    with bert.trace(encoding):
        logits = nnsight.save(bert.output.logits)
    torch.testing.assert_close(logits, plain)


@pytest.mark.parametrize("form", ["encoding", "keywords", "ids-and-keywords"])
@torch.no_grad()
def test_every_field_reaches_the_model_in_every_form(bert, form):
    fields = {
        "input_ids": torch.tensor([[2, 5, 4, 3]]),
        "token_type_ids": torch.tensor([[0, 0, 1, 1]]),
        "position_ids": torch.tensor([[3, 4, 5, 6]]),
        "labels": torch.tensor([[-100, 6, -100, -100]]),
    }
    plain = bert._module(**fields)
    if form == "encoding":
        tracer = bert.trace(fields)
    elif form == "keywords":
        tracer = bert.trace(**fields)
    else:
        rest = dict(fields)
        tracer = bert.trace(rest.pop("input_ids"), **rest)
    with tracer:
        output = nnsight.save(bert.output)
    torch.testing.assert_close(output.logits, plain.logits)
    torch.testing.assert_close(output.loss, plain.loss)


@torch.no_grad()
def test_unequal_invokes_pad_each_field_with_its_own_value(bert):
    short = {"input_ids": torch.tensor([[2, 4, 3]]), "labels": torch.tensor([[-100, 6, -100]])}
    long = {
        "input_ids": torch.tensor([[2, 5, 4, 3]]),
        "token_type_ids": torch.tensor([[0, 0, 1, 1]]),
    }
    received, output = _batch(bert, ((short,), {}), ((long,), {}))
    assert received["input_ids"].tolist() == [[2, 4, 3, 0], [2, 5, 4, 3]]  # right: BERT's side
    assert received["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert received["token_type_ids"].tolist() == [[0, 0, 0, 0], [0, 0, 1, 1]]  # default 0
    assert received["labels"].tolist() == [[-100, 6, -100, -100], [-100] * 4]  # ignored
    plain = bert._module(**received)
    torch.testing.assert_close(output.logits, plain.logits)
    torch.testing.assert_close(output.loss, plain.loss)
    alone = bert._module(input_ids=long["input_ids"], token_type_ids=long["token_type_ids"])
    torch.testing.assert_close(output.logits[1], alone.logits[0])


@torch.no_grad()
def test_class_labels_are_one_per_row(tokenizer):
    torch.manual_seed(0)
    module = BertForSequenceClassification(_bert_config()).eval()
    model = TransformersModel(module, task="text-classification", tokenizer=tokenizer)
    received, output = _batch(
        model, (([2, 5, 6, 3],), {"labels": 1}), ((torch.tensor([[2, 7, 3]]),), {"labels": [0]})
    )
    assert received["labels"].tolist() == [1, 0]
    torch.testing.assert_close(output.loss, module(**received).loss)
    with pytest.raises(ValueError, match="`labels` has 1 rows, but `input_ids` has 2"):
        with model.trace(torch.tensor([[2, 5, 3], [2, 6, 3]]), labels=torch.tensor([1])):
            pass


@torch.no_grad()
def test_left_padded_rows_count_positions_from_their_first_token(causal):
    received, output = _batch(
        causal, ((torch.tensor([[2, 7, 3]]),), {}), ((torch.tensor([[2, 5, 6, 7, 3]]),), {})
    )
    assert received["input_ids"].tolist() == [[0, 0, 2, 7, 3], [2, 5, 6, 7, 3]]
    assert received["position_ids"].tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    alone = causal._module(input_ids=torch.tensor([[2, 7, 3]])).logits
    torch.testing.assert_close(output.logits[0, -3:], alone[0], atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_inputs_embeds_batch_like_ids(causal):
    ids = torch.tensor([[2, 5, 6]])
    embeds = causal._module.get_input_embeddings()(ids)
    with causal.trace(inputs_embeds=embeds):
        logits = nnsight.save(causal.output.logits)
    torch.testing.assert_close(logits, causal._module(input_ids=ids).logits)


@torch.no_grad()
def test_a_field_without_default_must_be_in_every_invoke(causal):
    with pytest.raises(ValueError, match="1 of 2 rows have `decoder_input_ids`"):
        _batch(
            causal,
            ((torch.tensor([[2, 5]]),), {"decoder_input_ids": torch.tensor([[0, 5]])}),
            ((torch.tensor([[2, 6]]),), {}),
        )


@torch.no_grad()
def test_rows_of_several_widths_need_a_pad_token(causal):
    causal.tokenizer.pad_token = None
    received, _ = _batch(causal, ((torch.tensor([[2, 5]]),), {}), ((torch.tensor([[6, 3]]),), {}))
    assert received["input_ids"].tolist() == [[2, 5], [6, 3]]
    with pytest.raises(ValueError, match="without a pad token"):
        _batch(causal, ((torch.tensor([[2, 5]]),), {}), ((torch.tensor([[6]]),), {}))


def test_an_unknown_task_is_refused(tokenizer):
    module = GPT2LMHeadModel(GPT2Config(vocab_size=8, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="image-classification"):
        TransformersModel(module, task="image-classification", tokenizer=tokenizer)


@torch.no_grad()
def test_choice_ids_get_a_mask_per_token_and_match_transformers(tokenizer):
    torch.manual_seed(0)
    module = BertForMultipleChoice(_bert_config()).eval()
    with pytest.warns(nnsight.MovedNameWarning):  # BERT's `output` submodules
        model = TransformersModel(module, task="fill-mask", tokenizer=tokenizer, device="cpu")
    ids = torch.tensor([[[2, 5, 6, 3], [2, 7, 6, 3]]])  # [batch, choices, seq]
    with model.trace(ids):
        received = nnsight.save(model.inputs[1])
        logits = nnsight.save(model.output.logits)
    assert received["attention_mask"].shape == ids.shape
    assert bool(received["attention_mask"].all())
    torch.testing.assert_close(logits, module(input_ids=ids).logits)
