"""A finished trace leaves no reference cycle: with the cyclic collector off, a model is
freed when its last reference goes, also while the trace's tracer is still held."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from nnsight_lab import NNsight, TracingError


@pytest.fixture(autouse=True)
def _no_cyclic_gc():
    was = gc.isenabled()
    gc.disable()
    yield
    if was:
        gc.enable()


def _traced() -> tuple[weakref.ref, object, torch.Tensor]:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    model = NNsight(net)
    x = torch.rand(2, 4)
    with model.trace(x) as tracer:
        out = model[0].output.save()
    assert torch.equal(out, net[0](x))
    return weakref.ref(net), tracer, out


def test_model_freed_by_refcount_after_a_trace():
    net, _, _ = _traced()
    assert net() is None


def test_model_freed_while_the_tracer_is_held():
    net, tracer, out = _traced()
    assert net() is None and out.shape == (2, 4)
    with pytest.raises(TracingError, match="use the model itself"):
        _ = tracer.model.trace  # type: ignore[attr-defined]
