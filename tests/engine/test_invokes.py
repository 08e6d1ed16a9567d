"""Invokes: several inputs in one batched forward pass, each seeing its own rows."""

from __future__ import annotations

import pytest
import torch

import nnsight_lab as nnsight
from nnsight_lab import NNsight


class Counting(torch.nn.Module):
    """A two-layer net that counts its forward calls."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer1, self.layer2 = torch.nn.Linear(5, 10), torch.nn.Linear(10, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.layer2(self.layer1(x))


def test_invokes_run_as_one_batch_and_see_their_rows():
    net = Counting()
    model = NNsight(net)
    a, b = torch.rand(1, 5), torch.rand(2, 5)
    with model.trace() as tracer:
        with tracer.invoke(a):
            out_a = model.layer1.output.save()
        with tracer.invoke(b):
            out_b = model.layer1.output.save()
        with tracer.invoke():
            everything = model.output.save()
    assert net.calls == 1
    assert torch.allclose(out_a, net.layer1(a)) and torch.allclose(out_b, net.layer1(b))
    assert everything.shape == (3, 2)
    assert torch.allclose(everything, net(torch.cat([a, b])))


def test_writes_reach_only_the_invokes_rows():
    net = Counting()
    model = NNsight(net)
    a, b = torch.rand(1, 5), torch.rand(1, 5)
    with model.trace() as tracer:
        with tracer.invoke(a):
            model.layer1.output[:] = 0
            zeroed = model.output.save()
        with tracer.invoke(b):
            model.layer1.output = model.layer1.output * 2
            doubled = model.output.save()
    assert torch.allclose(zeroed, net.layer2(torch.zeros(1, 10)))
    assert torch.allclose(doubled, net.layer2(net.layer1(b) * 2))


def test_later_invoke_uses_an_earlier_invokes_value_without_barrier():
    net = Counting()
    model = NNsight(net)
    a, b = torch.rand(1, 5), torch.rand(1, 5)
    with model.trace() as tracer:
        with tracer.invoke(a):
            hidden_a = model.layer1.output.save()
        with tracer.invoke(b):
            model.layer1.output[:] = hidden_a
            patched = model.output.save()
    assert torch.allclose(patched, net(a))


def test_barrier_lets_invokes_meet():
    net = Counting()
    model = NNsight(net)
    a, b = torch.rand(1, 5), torch.rand(1, 5)
    with model.trace() as tracer:
        barrier = tracer.barrier(2)
        with tracer.invoke(a):
            hidden_a = model.layer1.output
            barrier()
        with tracer.invoke(b):
            barrier()
            model.layer1.output = hidden_a
            patched = model.output.save()
    assert torch.allclose(patched, net(a))


def test_invokes_in_a_loop_see_their_own_loop_variable():
    net = Counting()
    model = NNsight(net)
    inputs = [torch.rand(1, 5) for _ in range(3)]
    with model.trace() as tracer:
        outs = nnsight.save([])
        for index, x in enumerate(inputs):
            with tracer.invoke(x):
                outs.append((index, model.output))
    assert [i for i, _ in outs] == [0, 1, 2]
    for (_, out), x in zip(outs, inputs, strict=True):
        assert torch.allclose(out, net(x))


def test_a_name_no_invoke_assigns_is_a_name_error():
    model = NNsight(Counting())
    with pytest.raises(NameError, match="never_assigned"):
        with model.trace() as tracer:
            with tracer.invoke(torch.rand(1, 5)):
                model.layer1.output.save()
            with tracer.invoke(torch.rand(1, 5)):
                model.layer1.output[:] = never_assigned  # noqa: F821


def test_barrier_with_too_many_participants_is_a_clear_error():
    model = NNsight(Counting())
    with pytest.raises(nnsight.NotReachedError, match="barrier"):
        with model.trace() as tracer:
            barrier = tracer.barrier(3)
            with tracer.invoke(torch.rand(1, 5)):
                barrier()
            with tracer.invoke(torch.rand(1, 5)):
                barrier()


def test_trace_input_with_invokes_gives_rows_that_empty_invokes_see():
    net = Counting()
    model = NNsight(net)
    a, b = torch.rand(2, 5), torch.rand(1, 5)
    with model.trace(a) as tracer:
        with tracer.invoke(b):
            own = model.output.save()
        with tracer.invoke():
            everything = model.output.save()
    assert net.calls == 1
    assert torch.allclose(own, net(b))
    assert torch.allclose(everything, net(torch.cat([a, b])))


def test_trace_without_any_input_is_a_clear_error():
    model = NNsight(Counting())
    with pytest.raises(nnsight.TracingError, match="no input"):
        with model.trace() as tracer:
            with tracer.invoke():
                model.output.save()


def test_skip_in_one_invoke_replaces_the_module_for_its_rows_only():
    net = Counting()
    model = NNsight(net)
    a, b = torch.rand(1, 5), torch.rand(2, 5)
    replacement = torch.rand(1, 10)
    with model.trace() as tracer:
        with tracer.invoke(a):
            model.layer1.skip(replacement)
            out_a = model.output.save()
        with tracer.invoke(b):
            hidden_b = model.layer1.output.save()
            out_b = model.output.save()
    assert net.calls == 1
    assert torch.allclose(out_a, net.layer2(replacement))
    assert torch.allclose(hidden_b, net.layer1(b)) and torch.allclose(out_b, net(b))


class _CountingLinear(torch.nn.Linear):
    def forward(self, x):
        self.runs = getattr(self, "runs", 0) + 1
        return super().forward(x)


def test_skip_in_every_invoke_does_not_run_the_module():
    net = Counting()
    net.layer1.__class__ = _CountingLinear  # counts its forward's runs (hooks run either way)
    model = NNsight(net)
    a, b = torch.rand(2, 5), torch.rand(1, 5)
    with model.trace() as tracer:
        with tracer.invoke(b):
            model.layer1.skip(torch.zeros(1, 10))
            out_b = model.output.save()
        with tracer.invoke(a):
            model.layer1.skip(torch.ones(2, 10))
            out_a = model.output.save()
    assert getattr(net.layer1, "runs", 0) == 0
    assert torch.allclose(out_b, net.layer2(torch.zeros(1, 10)))
    assert torch.allclose(out_a, net.layer2(torch.ones(2, 10)))


def test_skip_in_one_invoke_of_a_language_model_matches_each_prompt_alone(llm, hf_gpt2):
    first, second = "The Eiffel Tower is", "Madrid is in Spain and"
    assert all(len(llm.tokenizer(p).input_ids) == 6 for p in (first, second))  # no padding
    with llm.trace() as tracer:
        with tracer.invoke(first):
            llm.transformer.h[1].skip(llm.transformer.h[0].output)  # block 1 left out
            skipped = llm.lm_head.output.save()
        with tracer.invoke(second):
            full = llm.lm_head.output.save()

    def logits(prompt, skip_block1):
        hook = hf_gpt2.transformer.h[1].register_forward_hook(lambda m, args, out: args[0])
        if not skip_block1:
            hook.remove()
        try:
            with torch.no_grad():
                return hf_gpt2(**llm.tokenizer(prompt, return_tensors="pt")).logits
        finally:
            hook.remove()

    assert torch.allclose(skipped, logits(first, skip_block1=True), atol=1e-4)
    assert torch.allclose(full, logits(second, skip_block1=False), atol=1e-4)
    assert not torch.allclose(skipped, logits(first, skip_block1=False), atol=1e-4)


def test_skip_in_one_invoke_with_the_wrong_number_of_rows_is_a_clear_error():
    model = NNsight(Counting())
    with pytest.raises(nnsight.TracingError, match=r"1 row\(s\)"):
        with model.trace() as tracer:
            with tracer.invoke(torch.rand(1, 5)):
                model.layer1.skip(torch.zeros(3, 10))
            with tracer.invoke(torch.rand(1, 5)):
                model.output.save()
