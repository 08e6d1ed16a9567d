"""A module attached to the tree and called with `hook=True` (an adapter, an SAE): its
submodules' values reach the other bodies of the trace; each checked against plain
torch on the same weights. Also what `model.edit(...)` binds."""

from __future__ import annotations

import torch
from torch import nn

import nnsight_lab as nnsight
from nnsight_lab import NNsight


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class Adapter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 2


class Repeat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(3):
            x = self.fc1(x)
        return x


def attached(net: nn.Module) -> NNsight:
    torch.manual_seed(0)
    model = NNsight(net)
    model.fc1.adapter = Adapter()
    with model.edit(inplace=True):
        acts = model.fc1.output
        model.fc1.output = model.fc1.adapter(acts, hook=True)
    return model


def test_an_edit_routes_through_an_attachment_the_trace_reads(stepped_runs):
    torch.manual_seed(1)
    net = MLP()
    model = attached(net)
    x = torch.randn(3, 8)
    with model.trace(x):
        inner = model.fc1.adapter.inner.output.save()
        fc1 = model.fc1.output.save()
        out = model.output.save()
    raw = net.fc1(x)
    assert torch.allclose(inner, net.fc1.adapter.inner(raw))
    assert torch.allclose(fc1, 2 * inner)
    assert torch.allclose(out, net.fc2(torch.relu(net.fc1.adapter(raw))))


def test_hook_true_is_seen_by_a_cache_and_plain_calls_are_not():
    net = MLP()
    model = attached(net)
    with model.trace(torch.randn(2, 8)) as tracer:
        cache = tracer.cache()
    assert "model.fc1.adapter.inner" in cache.keys()
    plain = NNsight(MLP())
    plain.fc1.adapter = Adapter()
    x = torch.randn(2, 8)
    with plain.trace(x) as tracer:
        cache = tracer.cache()
        applied = plain.fc1.adapter(plain.fc1.output).save()  # the trace stands down
    assert "model.fc1.adapter.inner" not in cache.keys()
    assert torch.allclose(applied, plain._module.fc1.adapter(plain._module.fc1(x)))


def test_an_attachment_under_the_edits_iter_applies_at_every_call(stepped_runs):
    net = Repeat()
    model = NNsight(net)
    model.fc1.adapter = Adapter()
    with model.edit(inplace=True) as tracer:
        for _ in tracer.iter[:]:
            model.fc1.output = model.fc1.adapter(model.fc1.output, hook=True)
    x = torch.randn(2, 8)
    with model.trace(x) as tracer:
        seen = nnsight.save([])
        for _ in tracer.iter[:3]:
            seen.append(model.fc1.adapter.inner.output)
        out = model.output.save()
    expected, h = [], x
    for _ in range(3):
        expected.append(net.fc1.adapter.inner(net.fc1(h)))
        h = 2 * expected[-1]
    assert len(seen) == 3 and all(torch.allclose(a, b) for a, b in zip(seen, expected, strict=True))
    assert torch.allclose(out, h)


def test_each_invoke_reads_its_rows_of_the_attachment():
    net = MLP()
    model = attached(net)
    xa, xb = torch.randn(2, 8), torch.randn(3, 8)
    with model.trace() as tracer:
        with tracer.invoke(xa):
            a = model.fc1.adapter.inner.output.save()
        with tracer.invoke(xb):
            b = model.fc1.adapter.inner.output.save()
    inner = net.fc1.adapter.inner
    assert torch.allclose(a, inner(net.fc1(xa)), atol=1e-6)
    assert torch.allclose(b, inner(net.fc1(xb)), atol=1e-6)


def test_edit_binds_the_tracer_inplace_and_the_copy_otherwise():
    model = NNsight(MLP())
    with model.edit(inplace=True) as tracer:
        assert tracer is not model and hasattr(tracer, "iter")
        model.fc1.output[:] = 0
    with model.edit() as edited:
        edited.fc2.output[:] = 1
    with model.edit() as (tracer, copy):
        assert tracer is not copy and copy is not model
    assert len(model._edits) == 1 and len(edited._edits) == 2 and len(copy._edits) == 2
    x = torch.randn(2, 8)
    with model.trace(x):
        fc1 = model.fc1.output.save()
    with edited.trace(x):
        out = edited.output.save()
    assert torch.equal(fc1, torch.zeros(2, 8)) and torch.equal(out, torch.ones(2, 8))


class WithExtra(NNsight):
    @nnsight.traceable
    def run(self, x: torch.Tensor) -> torch.Tensor:
        return self.extra(self._module(x), hook=True)  # a module the forward never calls


def test_a_driver_method_serves_an_attached_module_it_calls(stepped_runs):
    net = nn.Linear(8, 8)
    model = WithExtra(net)
    model.extra = Adapter()
    x = torch.randn(2, 8)
    with model.run(x) as tracer:
        inner = model.extra.inner.output.save()
    assert torch.allclose(inner, net.extra.inner(net(x)))
    assert torch.allclose(tracer.result, 2 * inner)
