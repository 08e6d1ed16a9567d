"""`model.scan`: shapes from fake tensors, with no compute and no weights read."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor

import nnsight_lab as nnsight
from nnsight_lab import LanguageModel, NNsight


def test_scan_gives_shapes_on_a_lazily_loaded_model(tiny_gpt2_path, hf_gpt2):
    llm = LanguageModel(str(tiny_gpt2_path))
    with llm.scan("Hello world"):
        width = nnsight.save(llm.transformer.h[0].output.shape[-1])
        shape = llm.lm_head.output.shape.save()
    assert not llm.dispatched  # no weights were read
    assert width == hf_gpt2.config.n_embd
    assert tuple(shape) == (1, 2, hf_gpt2.config.vocab_size)


def test_scan_does_not_compute(toy_net):
    calls = []
    toy_net.layer1.register_forward_hook(lambda m, a, out: calls.append(type(out).__name__))
    model = NNsight(toy_net)
    with model.scan(torch.rand(3, 5)):
        shape = model.output.shape.save()
    assert tuple(shape) == (3, 2) and calls == ["FakeTensor"]


def test_a_tensor_saved_in_a_scan_is_a_fake_with_the_real_shape(toy_net):
    x = torch.rand(3, 5)
    expected_hidden, expected_out = toy_net.layer1(x), toy_net(x)
    calls = []
    toy_net.layer1.register_forward_hook(lambda m, a, out: calls.append(type(out).__name__))
    model = NNsight(toy_net)
    with model.scan(x):
        hidden = model.layer1.output.save()
        out = model.output.save()
    assert calls == ["FakeTensor"]  # nothing real ran
    assert isinstance(hidden, FakeTensor) and isinstance(out, FakeTensor)
    assert hidden.shape == expected_hidden.shape and out.shape == expected_out.shape
    assert hidden.dtype == expected_hidden.dtype


def test_tensors_saved_in_a_scan_of_a_lazy_language_model(tiny_gpt2_path, hf_gpt2):
    llm = LanguageModel(str(tiny_gpt2_path))
    with llm.scan() as tracer:
        with tracer.invoke("Hello world"):
            attn = llm.transformer.h[0].attn.output.save()  # a tuple: (tensor, weights)
            hidden = llm.transformer.h[0].output.save()
        with tracer.invoke("The Eiffel Tower is in"):
            logits = llm.lm_head.output.save()
    assert not llm.dispatched  # no weights were read
    ids = llm.tokenizer(
        ["Hello world", "The Eiffel Tower is in"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        expected = hf_gpt2(**ids, output_hidden_states=True)
    rows, seq = ids.input_ids.shape
    assert isinstance(hidden, FakeTensor) and hidden.shape == (1, seq, hf_gpt2.config.n_embd)
    assert hidden.shape[1:] == expected.hidden_states[1].shape[1:]
    assert isinstance(attn, tuple) and attn[0].shape == hidden.shape
    assert logits.shape == (1, *expected.logits.shape[1:])


def test_scan_ends_the_forward_once_every_body_is_done(toy_net):
    calls = []
    toy_net.layer2.register_forward_hook(lambda m, a, out: calls.append("layer2"))
    model = NNsight(toy_net)
    with model.scan(torch.rand(1, 5)):
        width = nnsight.save(model.layer1.output.shape[-1])
    assert width == toy_net.layer1.out_features and calls == []  # layer2 never ran
    with model.scan(torch.rand(1, 5)):
        shape = model.output.shape.save()
    assert tuple(shape) == (1, 2) and calls == ["layer2"]


def test_scan_sees_a_weight_replaced_between_scans(toy_net):
    model = NNsight(toy_net)
    with model.scan(torch.rand(1, 5)):
        before = model.layer1.output.shape.save()
    toy_net.layer1.weight.data = torch.rand(3, 5)  # same Parameter object, new shape
    toy_net.layer1.bias.data = torch.rand(3)
    with model.scan(torch.rand(1, 5)):
        after = model.layer1.output.shape.save()
    assert tuple(before) == (1, toy_net.layer2.in_features) and tuple(after) == (1, 3)


def test_the_real_weights_are_back_after_a_scan_even_a_failed_one(hf_gpt2, tiny_gpt2_path):
    llm = LanguageModel(str(tiny_gpt2_path), dispatch=True)
    module = llm._model
    before = {name: (t, t.clone()) for name, t in module.state_dict(keep_vars=True).items()}
    with llm.scan("Hello world"):
        inside = nnsight.save(type(llm.transformer.h[0].attn.c_attn.weight).__name__)
    with pytest.raises(IndexError):
        with llm.scan("Hello world"):
            llm.transformer.h[5].output.save()  # the tiny model has 2 blocks
    after = module.state_dict(keep_vars=True)
    assert inside == "FakeTensor"  # the scan ran on fakes of the weights
    assert all(after[n] is t and torch.equal(t, copy) for n, (t, copy) in before.items())
    assert module.lm_head.weight is module.transformer.wte.weight  # still tied
    ids = llm.tokenizer("Hello world", return_tensors="pt")
    assert torch.allclose(module(**ids).logits, hf_gpt2(**ids).logits)
