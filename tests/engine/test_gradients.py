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
