"""The envoy tree as nnsight's Envoy API shows it: `modules()`, replacing and adding
submodules, shared entries, truthiness, `eproperty`, deprecated spellings; each
checked against the torch module or plain torch results."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nnsight_lab as nnsight
from nnsight_lab import Envoy, NNsight, NNsightDeprecationWarning, eproperty


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(4, 4)
        self.mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))


class Stack(nn.Module):
    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 4)
        self.layers = nn.ModuleList([Block() for _ in range(n)])
        self.head = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.layers = nn.ModuleList([self.shared, nn.Linear(4, 4), self.shared])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def torch_paths(module: nn.Module) -> list[str]:
    return ["model" + (f".{name}" if name else "") for name, _ in module.named_modules()]


def test_modules_lists_envoys_children_first_and_filters():
    net = Stack()
    model = NNsight(net)
    found = model.modules()
    assert found[-1] is model and all(isinstance(e, Envoy) for e in found)
    assert sorted(e.path for e in found) == sorted(torch_paths(net))
    linears = model.modules(include_fn=lambda e: isinstance(e._module, nn.Linear))
    assert [id(e._module) for e in linears] != []
    assert {id(e._module) for e in linears} == {
        id(m) for m in net.modules() if isinstance(m, nn.Linear)
    }
    named = dict(model.named_modules())
    assert named["model.layers.1.mlp"] is model.layers[1].mlp


def test_a_shared_module_has_one_envoy_and_every_entry(stepped_runs):
    net = Shared()
    model = NNsight(net)
    assert len(model.layers) == 3 and model.layers[2] is model.layers[0] is model.shared
    assert len(model.modules()) == len(list(net.named_modules()))
    x = torch.rand(2, 4)
    with model.trace(x):
        middle = model.layers[1].output.save()
    assert torch.equal(middle, net.layers[1](net.shared(x)))


def test_replacing_a_submodule_routes_the_new_one(stepped_runs):
    net = Stack()
    model = NNsight(net)
    old = model.head
    new = nn.Linear(4, 2)
    model.head = new
    assert net.head is new and model.head._module is new and model.head is not old
    assert model.head.parent is model and repr(model) == repr(net)
    paths = [e.path for e in model.modules()]
    assert len(paths) == len(set(paths)) and sorted(paths) == sorted(torch_paths(net))
    x = torch.rand(2, 4)
    with model.trace(x):
        out = model.head.output.save()
    assert torch.equal(out, net(x)) and out.shape == (2, 2)


def test_a_replacement_keeps_its_index():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh())
    model = NNsight(net)
    setattr(model, "1", nn.Identity())
    assert [type(e._module) for e in model] == [type(m) for m in net]
    x = torch.rand(1, 4)
    with model.trace(x):
        after = model[2].output.save()
    assert torch.equal(after, net[2](net[0](x)))


def test_a_truncated_layer_list_traces(stepped_runs):
    net = Stack(4)
    model = NNsight(net)
    model.layers = nn.ModuleList(list(net.layers)[:2])
    assert [e.path for e in model.layers] == ["model.layers.0", "model.layers.1"]
    x = torch.rand(2, 4)
    with model.trace(x):
        last = model.layers[1].output.save()
    assert torch.equal(last, net.layers[1](net.layers[0](net.embed(x))))


def test_an_added_module_is_a_child_and_is_routed(stepped_runs):
    net = nn.Sequential(nn.Linear(4, 4))
    model = NNsight(net)
    model.extra = Block()  # a Sequential runs it last
    assert net.extra is model.extra._module and model.extra.mlp[0].path == "model.extra.mlp.0"
    x = torch.rand(2, 4)
    with model.trace(x):
        out = model.extra.output.save()
    assert torch.equal(out, net(x)) and torch.equal(out, net.extra(net[0](x)))


def test_an_alias_follows_the_replacement():
    model = NNsight(Stack(), rename={"head": "readout"})
    model.head = nn.Identity()
    assert model.readout is model.head


def test_a_module_reached_by_a_property_is_its_envoy():
    class Base(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 4)

        @property
        def base_model(self) -> nn.Module:
            return self

    model = NNsight(Base(), rename={"base_model.layer": "inner"})
    assert model.base_model is model and model.inner is model.layer


def test_truthiness_is_the_modules():
    net = Stack()
    net.spare = nn.ModuleList()
    model = NNsight(net)
    assert bool(model.head) and bool(model.layers[0]) and bool(model)
    assert not model.spare and bool(net.spare) is False


def test_values_outside_a_trace_are_a_value_error():
    model = NNsight(Stack())
    with pytest.raises(ValueError, match="outside of interleaving"):
        _ = model.head.output
    with pytest.raises(ValueError, match="outside of interleaving"):
        _ = model.head.input


def test_deprecated_iter_and_all_warn_and_still_work():
    model = NNsight(nn.Linear(4, 4))
    with pytest.warns(NNsightDeprecationWarning, match=r"use tracer\.iter"):
        _ = model.iter
    with pytest.warns(NNsightDeprecationWarning, match=r"use tracer\.all\(\)"):
        model.all()


def test_trace_false_runs_the_model_with_its_edits():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model = NNsight(net)
    x = torch.rand(2, 4)
    assert torch.equal(model.trace(x, trace=False), net(x))
    with model.edit(inplace=True):
        model[1].output[:] = 0
    assert torch.equal(model.trace(x, trace=False), net[2].bias.expand(2, 2))


class Views(Envoy):
    @eproperty(key="output", description="the output, doubled")
    def doubled(self, value: torch.Tensor) -> torch.Tensor:
        return value * 2

    @eproperty(key="output")
    def halves(self, value: torch.Tensor) -> torch.Tensor:
        return value.reshape(*value.shape[:-1], 2, -1) * 1  # a copy: edits need the transform

    @halves.transform
    def halves(self, value: torch.Tensor) -> torch.Tensor:
        return value.flatten(-2)

    @eproperty(key="input")
    def first(self, value: tuple[tuple, dict]) -> torch.Tensor:
        (x,), _ = value
        return x

    @first.postprocess
    def first(self, value: torch.Tensor) -> tuple[tuple, dict]:
        return (value,), {}


def test_eproperty_reads_writes_and_transforms(stepped_runs):
    # A custom value is read where no stepped body can wait: bodies on this model run in
    # greenlets (the same results, see `NNsight._tree_changed`).
    net = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
    model = NNsight(net, envoys={nn.Linear: Views})
    x = torch.rand(2, 4)
    with model.trace(x):
        doubled = model[0].doubled.save()
        model[0].halves[..., 0, :] = 0
        out = model[1].output.save()
    hidden = net[0](x)
    assert torch.equal(doubled, hidden * 2)
    assert torch.equal(out, torch.tanh(torch.cat([torch.zeros(2, 2), hidden[:, 2:]], -1)))
    with model.trace(x):
        model[0].first = torch.zeros(2, 4)
        zeroed = model[1].output.save()
    assert torch.equal(zeroed, net(torch.zeros(2, 4)))
    assert stepped_runs == []


def test_eproperty_outside_a_trace_and_in_the_repr():
    model = NNsight(nn.Sequential(nn.Linear(4, 4)), envoys={nn.Linear: Views})
    with pytest.raises(ValueError, match="outside of interleaving"):
        _ = model[0].doubled
    assert str(Views.doubled) == "(doubled) -> Tensor: the output, doubled"
    assert "(doubled) -> Tensor: the output, doubled" in repr(model)
    assert nnsight.eproperty is eproperty


def test_repr_shows_aliases_and_is_torchs_without():
    net = Stack()
    assert repr(NNsight(net)) == repr(net)
    text = repr(NNsight(net, rename={"embed": ["e", "emb"], "layers.0.mlp": "first_mlp"}))
    assert "(e/emb/embed): Linear" in text and "(first_mlp): Sequential" in text


class OutputBlock(nn.Module):
    """A block with a submodule named `output`, as every BERT-style encoder layer has."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(4, 4)
        self.output = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.output(self.attn(x)))


def test_a_submodule_named_output_is_e_output_and_output_stays_the_value(stepped_runs):
    net = nn.Sequential(OutputBlock())
    with pytest.warns(nnsight.MovedNameWarning, match="`.E_output`") as warned:
        model = NNsight(nn.Sequential(OutputBlock(), OutputBlock()))  # warned once per class
    assert len(warned) == 1
    with pytest.warns(nnsight.MovedNameWarning, match="`.E_output`"):
        model = NNsight(net)
    block = model[0]
    assert block.E_output._module is net[0].output and block.E_output.path == "model.0.output"
    assert ("model.0.output", block.E_output) in model.named_modules()
    assert model.get("0.E_output") is block.E_output and "(E_output/output): Linear" in repr(block)
    x = torch.rand(2, 4)
    with model.trace(x):
        inner = block.E_output.output.save()
        whole = block.output.save()
    assert torch.equal(inner, net[0].output(net[0].attn(x))) and torch.equal(whole, net(x))
    block.E_output = nn.Identity()  # replaces the submodule `output` (no warning: named so)
    assert net[0].output is block.E_output._module and "E_output" not in net[0]._modules
    with model.trace(x):
        replaced = block.E_output.output.save()
    assert torch.equal(replaced, net[0].attn(x))


class Driven(NNsight):
    @nnsight.traceable
    def twice(self, x: torch.Tensor) -> torch.Tensor:
        return self._module(self._module(x))


def test_traceable_method_traces_in_a_with_and_runs_otherwise(stepped_runs):
    torch.manual_seed(0)
    net = nn.Linear(4, 4)
    model = Driven(net)
    x = torch.rand(2, 4)
    assert torch.equal(model.twice(x), net(net(x)))
    with model.twice(x) as tracer:
        first = model.output.save()  # the module's first call of the two
    assert torch.equal(first, net(x)) and torch.equal(tracer.result, net(net(x)))
    with model.trace(x, fn=model.twice) as tracer:
        model.output = torch.zeros(2, 4)
    assert torch.equal(tracer.result, net(torch.zeros(2, 4)))
    with model.trace(x):
        inside = model.twice(x).save()  # a plain call in a body just runs
        first = model.output.save()
    assert torch.equal(inside, net(net(x))) and torch.equal(first, net(x))
    with pytest.raises(TypeError, match="method of the traced model"):
        model.trace(x, fn=print)


def test_tracer_cls_chooses_the_tracer_and_session_class():
    from nnsight_lab.engine.session import Session
    from nnsight_lab.engine.tracer import Tracer

    class MyTracer(Tracer):
        pass

    class MySession(Session):
        pass

    net = nn.Linear(4, 4)
    model = NNsight(net)
    x = torch.rand(1, 4)
    with model.trace(x, tracer_cls=MyTracer) as tracer:
        out = model.output.save()
    assert type(tracer) is MyTracer and torch.equal(out, net(x))
    with model.session(tracer_cls=MySession) as session:
        with model.trace(x):
            again = model.output.save()
    assert type(session) is MySession and torch.equal(again, net(x))
    with pytest.raises(TypeError, match="subclass of nnsight_lab's `Tracer`"):
        model.trace(x, tracer_cls=dict)
