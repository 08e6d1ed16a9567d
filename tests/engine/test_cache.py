"""`tracer.cache()` as nnsight has it, against plain transformers / torch (each test runs
with stepped and greenlet bodies)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnsight_lab import NNsight
from nnsight_lab.errors import TracingError

PROMPT = "The Eiffel Tower is in"


def _tokens(llm, text=PROMPT):
    return llm.tokenizer(text, return_tensors="pt")


def _block_call(hf_gpt2, tokens, index=1):
    """What plain GPT-2's block `index` got and gave: ((args, kwargs), output)."""
    seen = {}

    def hook(module, args, kwargs, output):
        seen.update(args=args, kwargs=kwargs, output=output)

    handle = hf_gpt2.transformer.h[index].register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = hf_gpt2(**tokens).logits
    finally:
        handle.remove()
    return seen, logits


def test_a_module_called_once_has_one_entry_with_its_inputs(llm, hf_gpt2):
    with llm.trace(PROMPT) as tracer:
        cache = tracer.cache(modules=[llm.transformer.h[1]], include_inputs=True)
    seen, _ = _block_call(hf_gpt2, _tokens(llm))
    entry = cache["model.transformer.h.1"]
    assert len(entry) == 1
    args, kwargs = entry.inputs  # one (args, kwargs), as nnsight gives for one call
    assert isinstance(args, tuple) and isinstance(kwargs, dict)
    assert torch.allclose(args[0], seen["args"][0], atol=1e-5)
    assert entry.input is args[0]
    assert torch.allclose(entry.output, seen["output"], atol=1e-5)


def test_inputs_are_none_unless_cached_and_output_can_be_left_out(llm, hf_gpt2):
    with llm.trace(PROMPT) as tracer:
        outputs = tracer.cache(modules=[llm.transformer.h[1]])
        inputs = tracer.cache(
            modules=[llm.transformer.h[1]], include_output=False, include_inputs=True
        )
    seen, _ = _block_call(hf_gpt2, _tokens(llm))
    block = "model.transformer.h.1"
    assert outputs[block].inputs is None and outputs[block].input is None
    assert torch.allclose(outputs[block].output, seen["output"], atol=1e-5)
    assert inputs[block].output is None
    assert torch.allclose(inputs[block].input, seen["args"][0], atol=1e-5)


def test_every_module_by_path_and_by_attribute(llm, hf_gpt2):
    with llm.trace(PROMPT) as tracer:
        cache = tracer.cache()
    with torch.no_grad():
        plain = hf_gpt2(**_tokens(llm), output_hidden_states=True)
    block0 = cache["model.transformer.h.0"].output
    assert torch.allclose(block0, plain.hidden_states[1], atol=1e-5)
    assert cache.model.transformer.h[0].output is block0
    assert cache.transformer.h[0].output is block0  # nnsight's short form
    assert "model.transformer.h.0" in cache and "model.transformer.h.0.attn" in cache
    assert cache.keys()[0] == "model.transformer.wte"  # in the order the model ran them
    assert torch.allclose(cache["model.lm_head"].output, plain.logits, atol=1e-5)
    assert "model.transformer.h.0.mlp" in cache.model.transformer.h[0].keys()


def test_recorded_values_are_detached_on_the_cpu_by_default(llm):
    with llm.trace(PROMPT) as tracer:
        default = tracer.cache(modules=[llm.lm_head])
        attached = tracer.cache(modules=[llm.lm_head], detach=False, device=None)
        wide = tracer.cache(modules=[llm.lm_head], dtype=torch.float64)
        logits = llm.lm_head.output.save()
    assert logits.requires_grad  # the trace itself runs with gradients
    assert not default["model.lm_head"].output.requires_grad
    assert attached["model.lm_head"].output is logits
    assert wide["model.lm_head"].output.dtype == torch.float64
    assert torch.equal(wide["model.lm_head"].output, logits.detach().double())


def test_the_value_recorded_is_the_one_after_the_bodys_edit(llm, hf_gpt2):
    with llm.trace(PROMPT) as tracer:
        cache = tracer.cache(modules=[llm.transformer.h[0], llm.lm_head])
        llm.transformer.h[0].output[:] = 0
    hook = hf_gpt2.transformer.h[0].register_forward_hook(lambda m, a, out: out * 0)
    try:
        with torch.no_grad():
            expected = hf_gpt2(**_tokens(llm)).logits
    finally:
        hook.remove()
    assert torch.count_nonzero(cache["model.transformer.h.0"].output) == 0
    assert torch.allclose(cache["model.lm_head"].output, expected, atol=1e-5)


def test_one_entry_per_generation_step(llm, hf_gpt2):
    with llm.generate(PROMPT, max_new_tokens=3) as tracer:
        cache = tracer.cache(modules=["model.transformer.h.0", llm.lm_head])
    tokens = _tokens(llm)
    plain = hf_gpt2.generate(
        **tokens,
        max_new_tokens=3,
        do_sample=False,
        pad_token_id=llm.tokenizer.pad_token_id,
        output_logits=True,
        return_dict_in_generate=True,
    )
    steps = cache["model.lm_head"]
    assert len(steps) == 3 == len(cache["model.transformer.h.0"])
    assert isinstance(steps.output, list) and len(steps.output) == 3
    for ours, theirs in zip(steps.output, plain.logits, strict=True):
        assert torch.allclose(ours[:, -1], theirs, atol=1e-4)


def test_a_module_called_twice_in_one_forward_has_two_entries():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(self.layer(x))

    torch.manual_seed(0)
    net, x = Twice(), torch.rand(2, 4)
    model = NNsight(net)
    with model.trace(x) as tracer:
        cache = tracer.cache(include_inputs=True)
    entry = cache["model.layer"]
    first = net.layer(x)
    assert len(entry) == 2
    assert torch.allclose(entry.output[0], first) and torch.allclose(
        entry.output[1], net.layer(first)
    )
    assert torch.equal(entry.inputs[0][0][0], x)
    assert torch.equal(entry.inputs[1][0][0], entry.output[0])  # the second call's input
    assert len(cache["model"]) == 1 and torch.allclose(cache["model"].output, net(x))


def test_a_cache_opened_in_an_invoke_holds_that_invokes_rows(llm, hf_gpt2):
    clean, other = "The cat sat on the", "The dog ran through the"  # both 5 tokens
    with llm.trace() as tracer:
        with tracer.invoke([clean, clean]):
            first = tracer.cache(modules=[llm.lm_head])
        with tracer.invoke(other):
            second = tracer.cache(modules=[llm.lm_head])
    with torch.no_grad():
        clean_logits = hf_gpt2(**_tokens(llm, clean)).logits
        other_logits = hf_gpt2(**_tokens(llm, other)).logits
    assert first["model.lm_head"].output.shape[0] == 2
    assert torch.allclose(first["model.lm_head"].output[1:], clean_logits, atol=1e-4)
    assert second["model.lm_head"].output.shape[0] == 1
    assert torch.allclose(second["model.lm_head"].output, other_logits, atol=1e-4)


def test_two_caches_in_one_trace_are_both_filled(llm, hf_gpt2):
    with llm.trace() as tracer:
        head = tracer.cache(modules=[llm.lm_head])  # opened before the invokes: whole batch
        block = tracer.cache(modules=[llm.transformer.h[1]])
        with tracer.invoke(PROMPT):
            pass
        with tracer.invoke(PROMPT):
            pass
    seen, logits = _block_call(hf_gpt2, _tokens(llm))
    assert head.keys() == ["model.lm_head"] and block.keys() == ["model.transformer.h.1"]
    assert head["model.lm_head"].output.shape[0] == 2
    assert torch.allclose(head["model.lm_head"].output[1:], logits, atol=1e-5)
    assert torch.allclose(block["model.transformer.h.1"].output[:1], seen["output"], atol=1e-5)


def test_reading_an_uncovered_module_names_what_was_cached(llm):
    with llm.trace(PROMPT) as tracer:
        cache = tracer.cache(modules=[llm.lm_head])
    with pytest.raises(KeyError, match="does not cover it.*model.lm_head"):
        cache["model.transformer.h.0"].output  # noqa: B018


def test_modules_must_be_modules_of_the_model(llm):
    with pytest.raises(TracingError, match="no module of this model"):
        with llm.trace(PROMPT) as tracer:
            tracer.cache(modules=["model.transformer.nope"])
    with pytest.raises(TracingError, match="takes modules of the model"):
        with llm.trace(PROMPT) as tracer:
            tracer.cache(modules=[3])


def test_attribute_access_follows_rename_aliases(toy_net):
    model = NNsight(toy_net, rename={"layer1": "first"})
    x = torch.rand(1, 5)
    with model.trace(x) as tracer:
        cache = tracer.cache()
    assert cache.model.first.output is cache["model.layer1"].output
    assert cache["model.first"].output is cache["model.layer1"].output
    assert torch.allclose(cache.first.output, toy_net.layer1(x))
