"""After any trace, failed or interrupted, the model is exactly as before."""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import greenlet
import pytest
import torch

import nnsight_lab
from nnsight_lab import NNsight


def _state(net: torch.nn.Module) -> list:
    return [
        (
            name,
            sorted(module.__dict__.keys()),
            dict(module._forward_hooks),
            dict(module._forward_pre_hooks),
        )
        for name, module in net.named_modules()
    ]


def _greenlets() -> int:
    """Greenlets alive other than a thread's main one (which greenlet makes on first use)."""
    gc.collect()
    return sum(
        issubclass(type(o), greenlet.greenlet) and o.parent is not None for o in gc.get_objects()
    )


@pytest.mark.parametrize("error", [IndexError, KeyboardInterrupt])
def test_model_unchanged_after_an_error_in_the_body(toy_net, error):
    before, greenlets = _state(toy_net), _greenlets()
    x = torch.rand(1, 5)
    expected = toy_net(x)
    model = NNsight(toy_net)
    with pytest.raises(error):
        with model.trace(x):
            model.layer1.output[:, 0] = 0
            raise error("stop here")
    assert _state(toy_net) == before
    assert _greenlets() == greenlets
    with model.trace(x):
        out = model.output.save()
    assert torch.equal(out, expected)


def test_model_unchanged_after_an_error_in_the_model(toy_net):
    before = _state(toy_net)
    model = NNsight(toy_net)
    with pytest.raises(RuntimeError):
        with model.trace(torch.rand(1, 7)):  # wrong width: the model itself fails
            model.layer2.output.save()
    assert _state(toy_net) == before
    x = torch.rand(1, 5)
    assert torch.equal(toy_net(x), model._model(x))


def test_repeated_traces_do_not_leak_memory(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(1, 5)

    def one_trace():
        with model.trace(x):
            model.layer1.output[:, 0] = 0
            out = model.output.save()
        return out

    for _ in range(50):
        one_trace()
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.take_snapshot()
    for _ in range(1000):
        one_trace()
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(start, "filename"))
    tracemalloc.stop()
    assert grown < 64 * 1024, f"1,000 traces kept {grown} bytes"


def test_a_deleted_model_is_freed_after_a_trace_in_a_function():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model = NNsight(net)
    with model.trace(torch.ones(1, 2)):
        model[0].output.save()
    freed = weakref.ref(net)
    del net, model
    gc.collect()
    assert freed() is None


def test_nested_traces_of_two_models(toy_net):
    inner_net = torch.nn.Sequential(torch.nn.Linear(10, 3))
    outer, inner = NNsight(toy_net), NNsight(inner_net)
    x = torch.rand(1, 5)
    with outer.trace(x):
        hidden = outer.layer1.output
        with inner.trace(hidden):
            projected = inner[0].output.save()
        final = outer.output.save()
    assert torch.allclose(projected, inner_net(toy_net.layer1(x)))
    assert torch.allclose(final, toy_net(x))


def test_routed_forward_shows_the_original_signature(llm):
    """transformers picks arguments from `inspect.signature(model.forward)` (e.g. generate's
    `logits_to_keep`), so routing must not change what it sees."""
    import inspect

    expected = inspect.signature(llm._model.forward)
    with llm.trace("Hello"):
        seen = nnsight_lab.save(inspect.signature(llm._model.forward))
        llm.lm_head.output  # noqa: B018  (routes the model: a body waits)
    assert seen == expected and "logits_to_keep" in seen.parameters
