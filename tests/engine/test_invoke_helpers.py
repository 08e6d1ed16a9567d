"""Invokes opened in a function that the trace body calls (`helper(tracer)`)."""

from __future__ import annotations

import pytest
import torch

import nnsight_lab as nnsight
from nnsight_lab import NNsight


@pytest.fixture()
def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 10), torch.nn.Linear(10, 2))


def test_invokes_opened_in_a_helper_each_see_their_rows(net):
    model = NNsight(net)
    a, b = torch.rand(1, 5), torch.rand(2, 5)

    def invoke(tracer, x, key, outs):
        with tracer.invoke(x):
            outs[key] = model[0].output

    with model.trace() as tracer:
        outs = nnsight.save({})
        invoke(tracer, a, "a", outs)
        invoke(tracer, b, "b", outs)
    assert torch.allclose(outs["a"], net[0](a)) and torch.allclose(outs["b"], net[0](b))


def test_a_helper_invoke_beside_inline_ones_sees_the_whole_batch(net):
    model = NNsight(net)
    a, b = torch.rand(1, 5), torch.rand(2, 5)

    def whole_batch(tracer, sink):
        with tracer.invoke():
            sink["out"] = model.output * 2

    with model.trace() as tracer:
        sink = nnsight.save({})
        with tracer.invoke(a):
            pass
        with tracer.invoke(b):
            pass
        whole_batch(tracer=tracer, sink=sink)
    assert torch.allclose(sink["out"], net(torch.cat([a, b])) * 2)


def test_a_helper_edit_reaches_the_output_of_its_rows_only(net):
    model = NNsight(net)
    a, b = torch.rand(1, 5), torch.rand(1, 5)

    def zero(tracer, x):
        with tracer.invoke(x):
            model[0].output[:] = 0

    with model.trace() as tracer:
        with tracer.invoke(a):
            out_a = model.output.save()
        zero(tracer, b)
    assert torch.allclose(out_a, net(a))
    with model.trace(b):
        out_b = model.output.save()
    assert torch.allclose(out_b, net(b))  # the edit did not outlive its trace


def test_helpers_do_not_see_each_others_names(net):
    model = NNsight(net)
    seen = {}

    def binds(tracer):
        with tracer.invoke(torch.rand(1, 5)):
            secret = model[0].output.sum()  # noqa: F841

    def reads(tracer):
        with tracer.invoke(torch.rand(1, 5)):
            model[1].output  # noqa: B018  (past the other invoke's bind)
            try:
                seen["value"] = secret  # noqa: F821
            except NameError:
                seen["value"] = "NameError"

    with model.trace() as tracer:
        binds(tracer)
        reads(tracer)
    assert seen["value"] == "NameError"


def test_an_invoke_in_a_helper_called_inside_an_invoke_is_a_clear_error(net):
    model = NNsight(net)

    def nested(tracer):
        with tracer.invoke(torch.rand(1, 5)):
            pass

    with pytest.raises(nnsight.TracingError, match=r"helper\(tracer, \.\.\.\)"):
        with model.trace() as tracer:
            with tracer.invoke(torch.rand(1, 5)):
                nested(tracer)


def test_an_invoke_written_inside_an_invoke_keeps_its_own_error(net):
    model = NNsight(net)
    with pytest.raises(nnsight.TracingError, match="inside another invoke"):
        with model.trace() as tracer:
            with tracer.invoke(torch.rand(1, 5)):
                with tracer.invoke(torch.rand(1, 5)):
                    pass
