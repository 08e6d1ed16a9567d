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
