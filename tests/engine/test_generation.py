"""Generation: each model call is a step; `tracer.iter` addresses steps. Against plain HF."""

from __future__ import annotations

import pytest
import torch

import nnsight_lab as nnsight
from nnsight_lab import NNsightWarning

PROMPT = "The Eiffel Tower is in"


def _plain_generate(hf_gpt2, tokenizer, text, zero_block0_at=None, **kwargs):
    """HF generate with forward hooks: the per-step argmax, the ids, block 0 zeroed at a step."""
    calls, argmaxes = [0], []

    def zero(module, args, output):
        calls[0] += 1
        return output * 0 if calls[0] - 1 == zero_block0_at else output

    hooks = [
        hf_gpt2.transformer.h[0].register_forward_hook(zero),
        hf_gpt2.lm_head.register_forward_hook(
            lambda m, i, o: argmaxes.append(o[0, -1].argmax().item())
        ),
    ]
    try:
        ids = hf_gpt2.generate(
            **tokenizer(text, return_tensors="pt"), pad_token_id=tokenizer.pad_token_id, **kwargs
        )
    finally:
        for hook in hooks:
            hook.remove()
    return ids, argmaxes


def test_generate_output_equals_plain_generate(llm, hf_gpt2):
    with llm.generate(PROMPT, max_new_tokens=3) as tracer:
        out = llm.generator.output.save()
    expected, _ = _plain_generate(hf_gpt2, llm.tokenizer, PROMPT, max_new_tokens=3)
    assert torch.equal(out, expected) and torch.equal(tracer.result, expected)


def test_iter_with_step_index_and_an_edit_at_one_step(llm, hf_gpt2):
    with llm.generate(PROMPT, max_new_tokens=4) as tracer:
        tokens = nnsight.save(list())
        steps = nnsight.save(list())
        with tracer.iter[:] as step:
            steps.append(step)
            if step == 2:
                llm.transformer.h[0].output[:] = 0
            tokens.append(llm.lm_head.output[0, -1].argmax(dim=-1).item())
    expected_ids, expected_tokens = _plain_generate(
        hf_gpt2, llm.tokenizer, PROMPT, zero_block0_at=2, max_new_tokens=4
    )
    assert steps == [0, 1, 2, 3] and all(type(s) is int for s in steps)
    assert tokens == expected_tokens
    assert tokens == expected_ids[0, -4:].tolist()


@pytest.mark.parametrize(
    ("selector", "steps"), [(0, [0]), (slice(1, 3), [1, 2]), (slice(None, None, 2), [0, 2])]
)
def test_iter_selects_steps(llm, hf_gpt2, selector, steps):
    _, expected = _plain_generate(hf_gpt2, llm.tokenizer, PROMPT, max_new_tokens=4)
    with llm.generate(PROMPT, max_new_tokens=4) as tracer:
        seen = nnsight.save(list())
        with tracer.iter[selector] as step:
            seen.append((step, llm.lm_head.output[0, -1].argmax().item()))
    assert seen == [(s, expected[s]) for s in steps]


def test_for_loop_form_and_all(llm, hf_gpt2):
    ids, _ = _plain_generate(hf_gpt2, llm.tokenizer, PROMPT, max_new_tokens=3)
    with llm.generate(PROMPT, max_new_tokens=3) as tracer:
        streamed = nnsight.save(list())
        for step in tracer.iter[:]:
            streamed.append((step, llm.generator.streamer.output.item()))
    assert streamed == list(enumerate(ids[0, -3:].tolist()))
    with llm.generate(PROMPT, max_new_tokens=3) as tracer:
        count = nnsight.save([0])
        with tracer.all():
            llm.lm_head.output  # noqa: B018
            count[0] += 1
    assert count == [3]


def test_output_without_iter_is_step_zero(llm, hf_gpt2):
    _, expected = _plain_generate(hf_gpt2, llm.tokenizer, PROMPT, max_new_tokens=3)
    with llm.generate(PROMPT, max_new_tokens=3):
        first = llm.lm_head.output[0, -1].argmax().item().save()
    assert first == expected[0]


def test_modules_run_unrouted_once_every_body_is_done(llm, hf_gpt2):
    block = llm.transformer.h[0]._module
    routed = []  # per step: is block 0's forward the engine's routing wrapper?
    hook = block.register_forward_pre_hook(lambda m, a: routed.append("forward" in m.__dict__))
    try:
        with llm.generate(PROMPT, max_new_tokens=3) as tracer:
            first = llm.transformer.h[1].output.save()
        ids = tracer.result
    finally:
        hook.remove()
    expected, _ = _plain_generate(hf_gpt2, llm.tokenizer, PROMPT, max_new_tokens=3)
    assert routed == [True, False, False]  # the body was done after step 0's block 1
    assert torch.equal(ids, expected) and first.shape[-1] == hf_gpt2.config.n_embd


def test_code_after_unbounded_iter_warns_and_an_empty_invoke_runs_after(llm, hf_gpt2):
    ids, _ = _plain_generate(hf_gpt2, llm.tokenizer, "Hello", max_new_tokens=3)
    with pytest.warns(NNsightWarning, match="did not run"):
        with llm.generate("Hello", max_new_tokens=3) as tracer:
            with tracer.iter[:]:
                llm.transformer.h[-1].output  # noqa: B018
            never = llm.output.save()  # noqa: F841
    assert "never" not in locals()
    with llm.generate("Hello", max_new_tokens=3) as tracer:
        with tracer.invoke():
            hidden = nnsight.save([])
            with tracer.iter[:]:
                hidden.append(llm.transformer.h[-1].output)
        with tracer.invoke():
            final_output = llm.output.save()
    assert len(hidden) == 3
    assert torch.equal(final_output, ids)


def test_early_stop_at_eos_ends_the_iteration_cleanly(llm):
    eos = llm.tokenizer.eos_token_id
    with llm.generate(PROMPT, max_new_tokens=5, eos_token_id=eos) as tracer:
        seen = nnsight.save([])
        with tracer.iter[:] as step:
            if step == 1:
                llm.lm_head.output[:, -1, :] = -1e9
                llm.lm_head.output[:, -1, eos] = 1e9  # force EOS at step 1
            seen.append(step)
    assert seen == [0, 1]


def test_iter_outside_a_trace_is_a_clear_error(llm):
    with pytest.raises(nnsight.TracingError, match="tracer.iter"):
        with llm.generate(PROMPT, max_new_tokens=2) as tracer:
            pass
        with tracer.iter[:]:
            pass


def test_iteration_bodies_run_stepped(llm, hf_gpt2, runner, monkeypatch):
    from nnsight_lab.engine.stepped_mediator import SteppedMediator

    started = []
    start = SteppedMediator.start
    monkeypatch.setattr(
        SteppedMediator, "start", lambda self, i: (started.append(1), start(self, i))
    )
    _, expected = _plain_generate(hf_gpt2, llm.tokenizer, PROMPT, max_new_tokens=3)
    with llm.generate(PROMPT, max_new_tokens=3) as tracer:
        tokens = nnsight.save(list())
        for step in tracer.iter[:]:
            tokens.append((step, llm.lm_head.output[0, -1].argmax().item()))
    assert tokens == list(enumerate(expected))
    assert started == ([1] if runner == "stepped" else [])


def _line_of(marker):
    """The line of this file that holds `marker` (where a warning must point)."""
    lines = open(__file__).read().splitlines()
    return next(i for i, line in enumerate(lines, 1) if marker in line and "_line_of" not in line)


def test_for_step_in_all_runs_every_step(llm, hf_gpt2, runner, monkeypatch):
    from nnsight_lab.engine.stepped_mediator import SteppedMediator

    started = []
    start = SteppedMediator.start
    monkeypatch.setattr(
        SteppedMediator, "start", lambda self, i: (started.append(1), start(self, i))
    )
    ids, expected = _plain_generate(hf_gpt2, llm.tokenizer, PROMPT, max_new_tokens=4)
    with llm.generate(PROMPT, max_new_tokens=4) as tracer:
        tokens = nnsight.save(list())
        for step in tracer.all():
            tokens.append((step, llm.lm_head.output[0, -1].argmax().item()))
    assert tokens == list(enumerate(expected))
    assert torch.equal(tracer.result, ids)
    assert started == ([1] if runner == "stepped" else [])


def test_stop_in_generate_ends_it_and_keeps_the_steps_saved_before(llm, hf_gpt2):
    _, expected = _plain_generate(hf_gpt2, llm.tokenizer, PROMPT, max_new_tokens=5)
    calls, side = [], []
    hook = llm._model.lm_head.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with llm.generate(PROMPT, max_new_tokens=5) as tracer:
            tokens = nnsight.save(list())
            for step in tracer.iter[:]:
                tokens.append(llm.lm_head.output[0, -1].argmax().item())
                if step == 1:
                    tracer.stop()
                side.append(step)
    finally:
        hook.remove()
    assert tokens == expected[:2] and side == [0] and len(calls) == 2


def test_iter_past_the_last_step_warns_naming_its_line(llm, hf_gpt2):
    _, expected = _plain_generate(hf_gpt2, llm.tokenizer, PROMPT, max_new_tokens=3)
    with pytest.warns(NNsightWarning, match="step 5 .*never reached") as record:
        with llm.generate(PROMPT, max_new_tokens=3) as tracer:
            seen = nnsight.save(list())
            with tracer.iter[5]:  # marker: iter 5
                seen.append(llm.lm_head.output)
    assert seen == []
    assert [(w.filename, w.lineno) for w in record] == [(__file__, _line_of("marker: iter 5"))]
    with pytest.warns(NNsightWarning, match="step 3 .*never reached") as record:
        with llm.generate(PROMPT, max_new_tokens=3) as tracer:
            seen = nnsight.save(list())
            for step in tracer.iter[1:6]:  # marker: iter 1:6
                seen.append((step, llm.lm_head.output[0, -1].argmax().item()))
            after = llm.output.save()  # noqa: F841
    assert seen == [(1, expected[1]), (2, expected[2])]  # the steps reached are kept
    assert [w.lineno for w in record] == [_line_of("marker: iter 1:6")]
    assert "did not run" in str(record[0].message) and "after" not in locals()


def test_bounded_iter_within_the_steps_and_unbounded_iter_do_not_warn(llm, hf_gpt2):
    _, expected = _plain_generate(hf_gpt2, llm.tokenizer, PROMPT, max_new_tokens=3)
    for steps in (slice(0, 3), slice(None)):  # a warning would fail the test
        with llm.generate(PROMPT, max_new_tokens=3) as tracer:
            seen = nnsight.save(list())
            for _step in tracer.iter[steps]:
                seen.append(llm.lm_head.output[0, -1].argmax().item())
        assert seen == expected
