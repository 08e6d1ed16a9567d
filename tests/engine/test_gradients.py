"""Gradients inside `with loss.backward():`, against plain torch autograd."""

from __future__ import annotations

import pytest
import torch

import nnsight_lab as nnsight
from nnsight_lab import NNsight, OutOfOrderError

PROMPT = "Hello world"


def _plain_grads(hf_gpt2, tokenizer, zero_last_block_grad=False):
    """Gradients of logits.sum() at the last block's and the first block's outputs."""
    seen = {}

    def keep(name, zero=False):
        def hook(module, args, output):
            def on_grad(grad):
                seen[name] = grad.clone()
                return torch.zeros_like(grad) if zero else grad

            output.register_hook(on_grad)

        return hook

    hooks = [
        hf_gpt2.transformer.h[-1].register_forward_hook(keep("last", zero_last_block_grad)),
        hf_gpt2.transformer.h[0].register_forward_hook(keep("first")),
    ]
    try:
        hf_gpt2.zero_grad()
        hf_gpt2(**tokenizer(PROMPT, return_tensors="pt")).logits.sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_grad_in_backward_block_equals_autograd(llm, hf_gpt2):
    expected = _plain_grads(hf_gpt2, llm.tokenizer)
    with llm.trace(PROMPT):
        first = llm.transformer.h[0].output
        hs = llm.transformer.h[-1].output
        hs.requires_grad_(True)
        loss = llm.lm_head.output.sum()
        with loss.backward():
            last_grad = hs.grad.save()
            first_grad = first.grad.save()
    assert torch.allclose(last_grad, expected["last"], atol=1e-6)
    assert torch.allclose(first_grad, expected["first"], atol=1e-6)


def test_editing_a_grad_reaches_earlier_layers(llm, hf_gpt2):
    expected = _plain_grads(hf_gpt2, llm.tokenizer, zero_last_block_grad=True)
    with llm.trace(PROMPT):
        first = llm.transformer.h[0].output
        hs = llm.transformer.h[-1].output
        loss = llm.lm_head.output.sum()
        with loss.backward():
            original = hs.grad.clone().save()
            hs.grad[:] = 0
            modified = hs.grad.save()
            first_grad = first.grad.save()
    assert original.abs().sum() > 0 and modified.abs().sum() == 0
    assert torch.allclose(first_grad, expected["first"], atol=1e-6)


def test_grads_read_out_of_order_raise(llm):
    with pytest.raises(OutOfOrderError, match="reverse order"):
        with llm.trace(PROMPT):
            first = llm.transformer.h[0].output
            hs = llm.transformer.h[-1].output
            loss = llm.lm_head.output.sum()
            with loss.backward():
                first.grad.save()
                hs.grad.save()


def test_grad_outside_backward_block_is_a_clear_error(llm):
    with pytest.raises(nnsight.TracingError, match="loss.backward"):
        with llm.trace(PROMPT):
            hs = llm.transformer.h[-1].output
            hs.grad.save()


def test_older_style_retain_grad_and_plain_backward(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(1, 5)
    with model.trace(x):
        hidden = model.layer1.output.save()
        hidden.retain_grad()
        model.output.sum().backward()
    plain_hidden = toy_net.layer1(x)
    plain_hidden.retain_grad()
    toy_net.zero_grad()
    toy_net.layer2(plain_hidden).sum().backward()
    assert torch.allclose(hidden.grad, plain_hidden.grad)


def test_parameter_grads_accumulate_as_in_torch(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(1, 5)
    toy_net.zero_grad()
    for _ in range(2):
        with model.trace(x):
            loss = model.output.sum()
            with loss.backward():
                pass
    traced = toy_net.layer1.weight.grad.clone()
    toy_net.zero_grad()
    for _ in range(2):
        toy_net(x).sum().backward()
    assert torch.allclose(traced, toy_net.layer1.weight.grad)


# -- one invoke's rows of a batch ------------------------------------------------------

OTHER = "Hello there"  # as many tokens as PROMPT: no padding


def _batched_grads(hf_gpt2, tokenizer, zero_last_rows=None):
    """Plain autograd on the batch [OTHER, PROMPT] with loss = PROMPT's logits (row 1)
    plus OTHER's (row 0): the last block's output gradient of row 1, and the first MLP's
    weight gradient, where `zero_last_rows` zeroes rows of the last block's gradient."""
    seen = {}

    def hook(module, args, output):
        def on_grad(grad):
            seen["last"] = grad[1:2].clone()
            if zero_last_rows is not None:
                grad = grad.clone()
                grad[zero_last_rows] = 0
            return grad

        output.register_hook(on_grad)

    handle = hf_gpt2.transformer.h[-1].register_forward_hook(hook)
    try:
        hf_gpt2.zero_grad()
        batch = tokenizer([OTHER, PROMPT], return_tensors="pt")
        hf_gpt2(**batch).logits.sum().backward()
    finally:
        handle.remove()
    seen["c_fc"] = hf_gpt2.transformer.h[0].mlp.c_fc.weight.grad.clone()
    hf_gpt2.zero_grad()
    return seen


def test_one_invokes_grad_equals_autograd_and_an_edit_changes_only_its_rows(llm, hf_gpt2):
    assert len(llm.tokenizer(OTHER).input_ids) == len(llm.tokenizer(PROMPT).input_ids)
    expected = _batched_grads(hf_gpt2, llm.tokenizer, zero_last_rows=slice(1, 2))
    untouched = _batched_grads(hf_gpt2, llm.tokenizer)
    llm._module.zero_grad()
    with llm.trace() as tracer:
        with tracer.invoke(OTHER):
            other_logits = llm.lm_head.output
        with tracer.invoke(PROMPT):
            hs = llm.transformer.h[-1].output
            loss = llm.lm_head.output.sum() + other_logits.sum()
            with loss.backward():
                before = hs.grad.clone().save()
                hs.grad = hs.grad * 0
                after = hs.grad.save()
    c_fc = llm._module.transformer.h[0].mlp.c_fc.weight.grad.clone()
    llm._module.zero_grad()
    assert before.shape == expected["last"].shape
    assert torch.allclose(before, expected["last"], atol=1e-6)  # the invoke's rows only
    assert before.abs().sum() > 0 and after.abs().sum() == 0
    assert not torch.allclose(expected["c_fc"], untouched["c_fc"], atol=1e-6)
    assert torch.allclose(c_fc, expected["c_fc"], atol=1e-6)


def test_grad_of_rows_the_loss_does_not_use_is_zero(llm):
    with llm.trace() as tracer:
        with tracer.invoke(OTHER):
            other = llm.transformer.h[-1].output
        with tracer.invoke(PROMPT):
            loss = llm.lm_head.output.sum()
            with loss.backward():
                grad = other.grad.save()
    assert grad.shape == (1, 2, 64) and not grad.any()


def test_grad_of_a_tensor_the_loss_does_not_use_is_a_clear_error(llm):
    with pytest.raises(nnsight.TracingError, match="does not depend"):
        with llm.trace(PROMPT):
            unused = llm.transformer.h[-1].output * 2
            loss = llm.lm_head.output.sum()
            with loss.backward():
                unused.grad.save()


def test_grad_of_a_leaf_the_loss_does_not_use_is_a_clear_error(toy_net):
    model, x = NNsight(toy_net), torch.rand(2, 5)
    weight = torch.ones(2, requires_grad=True)
    with model.trace(x):
        loss = (model.output * weight).sum()
        with loss.backward():
            used = weight.grad.save()
    (expected,) = torch.autograd.grad((toy_net(x) * weight).sum(), weight)
    assert torch.allclose(used, expected)
    with pytest.raises(nnsight.TracingError, match="does not depend"):
        with model.trace(x):
            loss = model.output.sum()
            with loss.backward():
                weight.grad.save()
