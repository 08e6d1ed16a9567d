"""cache, stop, skip and calling modules inside a trace, against plain torch / HF."""

from __future__ import annotations

import pytest
import torch

import nnsight_lab as nnsight
from nnsight_lab import NNsight

PROMPT = "The Eiffel Tower is in"


def _plain(hf_gpt2, tokenizer, text=PROMPT):
    with torch.no_grad():
        return hf_gpt2(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)


def test_cache_holds_every_module_output(llm, hf_gpt2):
    with llm.trace(PROMPT) as tracer:
        cache = tracer.cache()
    expected = _plain(hf_gpt2, llm.tokenizer)
    block0 = cache["model.transformer.h.0"].output
    assert torch.allclose(block0, expected.hidden_states[1], atol=1e-5)
    assert cache.model.transformer.h[0].output is block0
    assert torch.allclose(cache["model.lm_head"].output, expected.logits, atol=1e-5)


def test_cache_of_chosen_modules_with_inputs(llm):
    with llm.trace(PROMPT) as tracer:
        cache = tracer.cache(modules=[llm.transformer.h[1]], include_inputs=True)
        hidden = llm.transformer.h[0].output.save()
    assert cache.keys() == ["model.transformer.h.1"]
    assert torch.equal(cache["model.transformer.h.1"].input, hidden)


def test_stop_ends_the_forward_pass(toy_net):
    calls = []
    toy_net.layer2.register_forward_hook(lambda *a: calls.append(1))
    model = NNsight(toy_net)
    x = torch.rand(1, 5)
    with model.trace(x) as tracer:
        hidden = model.layer1.output.save()
        tracer.stop()
    assert calls == [] and torch.allclose(hidden, toy_net.layer1(x))


def test_skip_uses_the_value_instead_of_running(llm, hf_gpt2):
    with llm.trace(PROMPT):
        layer0 = llm.transformer.h[0].output
        llm.transformer.h[1].skip(layer0)
        logits = llm.lm_head.output.save()
    tokens = llm.tokenizer(PROMPT, return_tensors="pt")
    hook = hf_gpt2.transformer.h[1].register_forward_hook(lambda m, a, out: a[0])
    try:
        with torch.no_grad():
            expected = hf_gpt2(**tokens).logits
    finally:
        hook.remove()
    assert torch.allclose(logits, expected, atol=1e-5)


def test_skip_with_a_wrong_value_is_a_clear_error(llm):
    with pytest.raises(nnsight.TracingError, match="skip"):
        with llm.trace(PROMPT):
            llm.transformer.h[1].skip(llm.transformer.h[0])


def test_calling_a_module_inside_a_trace_does_not_disturb_it(llm, hf_gpt2):
    with llm.trace(PROMPT):
        hidden = llm.transformer.h[0].output
        lens = llm.lm_head(llm.transformer.ln_f(hidden)).save()
        logits = llm.lm_head.output.save()
    expected = _plain(hf_gpt2, llm.tokenizer)
    with torch.no_grad():
        expected_lens = hf_gpt2.lm_head(hf_gpt2.transformer.ln_f(expected.hidden_states[1]))
    assert torch.allclose(lens, expected_lens, atol=1e-5)
    assert torch.allclose(logits, expected.logits, atol=1e-5)


def test_persistent_edits(llm, hf_gpt2):
    with llm.trace("The Eiffel Tower is in the city of"):
        paris_hidden = llm.transformer.h[-1].output[:, -1, :].save()
    with llm.edit() as edited:
        llm.transformer.h[-1].output[:, -1, :] = paris_hidden
    with llm.trace("Vatican is in the city of"):
        original = llm.lm_head.output.save()
    with edited.trace("Vatican is in the city of"):
        modified = llm.lm_head.output.save()
    expected = _plain(hf_gpt2, llm.tokenizer, "Vatican is in the city of").logits
    assert torch.allclose(original, expected, atol=1e-5)
    with torch.no_grad():
        patched = hf_gpt2.lm_head(hf_gpt2.transformer.ln_f(paris_hidden))
    assert torch.allclose(modified[:, -1], patched, atol=1e-5)
    assert not torch.allclose(modified[:, -1], original[:, -1])
    edited.clear_edits()
    with edited.trace("Vatican is in the city of"):
        cleared = llm.lm_head.output.save()
    assert torch.allclose(cleared, original)


def test_inplace_edit(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(1, 5)
    with model.edit(inplace=True):
        model.layer1.output[:] = 0
    with model.trace(x):
        out = model.output.save()
    assert torch.allclose(out, toy_net.layer2.bias.unsqueeze(0))
    model.clear_edits()
    with model.trace(x):
        out = model.output.save()
    assert torch.allclose(out, toy_net(x))


def _calls_of(module, calls, name):
    """Record `name` in `calls` each time `module` starts running."""
    return module.register_forward_pre_hook(lambda *_: calls.append(name))


def test_stop_ends_the_body_there_and_keeps_what_it_saved(llm, hf_gpt2):
    calls, side = [], []
    hooks = [_calls_of(llm._model.transformer.h[i], calls, i) for i in (0, 1)]
    try:
        with llm.trace(PROMPT) as tracer:
            hidden = llm.transformer.h[0].output.save()
            tracer.stop()
            side.append("after stop")  # the caller's list: a side effect that must not happen
            logits = llm.lm_head.output.save()  # noqa: F841
    finally:
        for hook in hooks:
            hook.remove()
    expected = _plain(hf_gpt2, llm.tokenizer)
    assert torch.allclose(hidden, expected.hidden_states[1], atol=1e-5)
    assert side == [] and calls == [0]  # block 1 never ran
    assert "logits" not in locals()


def test_stop_is_not_caught_by_the_bodys_except_exception(toy_net):
    model = NNsight(toy_net)
    side = []
    x = torch.rand(1, 5)
    with model.trace(x) as tracer:
        hidden = model.layer1.output.save()
        try:
            tracer.stop()
        except Exception:
            side.append("caught")
        side.append("after")
    assert side == [] and torch.allclose(hidden, toy_net.layer1(x))


def test_stop_before_any_read_runs_nothing(toy_net):
    calls = []
    _calls_of(toy_net.layer1, calls, 1)
    model = NNsight(toy_net)
    with model.trace(torch.rand(1, 5)) as tracer:
        kept = nnsight.save([1])
        tracer.stop()
        kept.append(2)
    assert kept == [1] and calls == []


def test_stop_in_an_invoke_ends_the_forward_for_the_batch(llm, hf_gpt2):
    first, second = "The Eiffel Tower is", "Madrid is in Spain and"
    assert all(len(llm.tokenizer(p).input_ids) == 6 for p in (first, second))  # no padding
    calls, side = [], []
    hook = _calls_of(llm._model.transformer.h[1], calls, 1)
    try:
        with llm.trace() as tracer:
            with tracer.invoke(first):
                hidden_a = llm.transformer.h[0].output.save()
                tracer.stop()
                side.append("a")
            with tracer.invoke(second):
                hidden_b = llm.transformer.h[0].output.save()
                side.append("b")
    finally:
        hook.remove()
    assert side == ["b"] and calls == []
    assert torch.allclose(
        hidden_a, _plain(hf_gpt2, llm.tokenizer, first).hidden_states[1], atol=1e-5
    )
    assert torch.allclose(
        hidden_b, _plain(hf_gpt2, llm.tokenizer, second).hidden_states[1], atol=1e-5
    )


def test_a_read_past_another_invokes_stop_is_a_clear_error(llm):
    with pytest.raises(nnsight.NotReachedError, match=r"tracer\.stop\(\)"):
        with llm.trace() as tracer:
            with tracer.invoke(PROMPT):
                llm.transformer.h[0].output.save()
                tracer.stop()
            with tracer.invoke(PROMPT):
                llm.lm_head.output.save()


def test_a_bounded_iter_in_a_one_pass_trace_warns_that_step_1_was_never_reached(llm, hf_gpt2):
    with pytest.warns(nnsight.NNsightWarning, match=r"step 1 .*lm_head\.output") as record:
        with llm.trace(PROMPT) as tracer:
            seen = nnsight.save(list())
            with tracer.iter[0:3] as step:
                seen.append((step, llm.lm_head.output))
    lines = open(__file__).read().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "with tracer.iter[0:3] as step:" in text)
    assert [(w.filename, w.lineno) for w in record] == [(__file__, line)]
    assert [s for s, _ in seen] == [0]
    assert torch.allclose(seen[0][1], _plain(hf_gpt2, llm.tokenizer).logits, atol=1e-5)


def test_a_bounded_iter_that_reads_nothing_runs_every_step(toy_net):
    model = NNsight(toy_net)
    with model.trace(torch.rand(1, 5)) as tracer:  # a warning would fail the test
        steps = nnsight.save(list())
        for step in tracer.iter[0:3]:
            steps.append(step)
        out = model.output.save()
    assert steps == [0, 1, 2] and out.shape == (1, 2)
