"""Reading and editing a module's values inside a trace, against plain torch."""

from __future__ import annotations

import pytest
import torch

import nnsight_lab as nnsight
from nnsight_lab import NNsight, OutOfOrderError


def test_print_shows_torch_hierarchy(toy_net):
    model = NNsight(toy_net)
    assert repr(model) == repr(toy_net)
    assert model._model is toy_net
    assert model.layer1._module is toy_net.layer1
    assert model[1]._module is toy_net.layer2


def test_outputs_and_inputs_equal_plain_torch(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(1, 5)
    with model.trace(x):
        args, kwargs = model.layer1.inputs
        first = model.layer1.input.save()
        l1 = model.layer1.output.save()
        l2_in = model.layer2.input.save()
        out = model.output.save()
        both = nnsight.save((args, kwargs))
    expected_hidden = toy_net.layer1(x)
    assert torch.equal(first, x)
    assert torch.allclose(l1, expected_hidden)
    assert torch.equal(l2_in, l1)
    assert torch.allclose(out, toy_net(x))
    assert both[1] == {} and torch.equal(both[0][0], x)


def test_real_torch_ops_on_values(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(1, 5)
    with model.trace(x):
        idx = torch.argmax(model.layer1.output, dim=1).save()
        total = (model.layer1.output.sum() + model.layer2.output.sum()).save()
    hidden = toy_net.layer1(x)
    assert torch.equal(idx, torch.argmax(hidden, dim=1))
    assert torch.allclose(total, hidden.sum() + toy_net.layer2(hidden).sum())


def test_inplace_edit_is_seen_downstream(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(1, 5)
    with model.trace(x):
        before = model.layer1.output.clone().save()
        model.layer1.output[:, 0] = 0
        after = model.layer1.output.save()
        out = model.output.save()
    hidden = toy_net.layer1(x)
    hidden[:, 0] = 0
    assert torch.allclose(before[:, 1:], after[:, 1:]) and after[0, 0] == 0
    assert torch.allclose(out, toy_net.layer2(hidden))


def test_replacement(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(1, 5)
    with model.trace(x):
        model.layer1.output = model.layer1.output * 0
        zeroed = model.output.save()
    assert torch.allclose(zeroed, toy_net.layer2.bias.unsqueeze(0))


def test_input_replacement(toy_net):
    model = NNsight(toy_net)
    x, y = torch.rand(1, 5), torch.rand(1, 5)
    with model.trace(x):
        model.layer1.input = y
        out = model.output.save()
    assert torch.allclose(out, toy_net(y))


def test_any_value_can_be_saved(toy_net):
    model = NNsight(toy_net)
    with model.trace(torch.rand(1, 5)):
        tokens = list().save()
        tokens.append(model.layer1.output.shape[-1])
        count = nnsight.save(len(tokens))
    assert tokens == [10] and count == 1


def test_unsaved_values_do_not_leak(toy_net):
    model = NNsight(toy_net)
    with model.trace(torch.rand(1, 5)):
        output = model.output
    with pytest.raises(NameError):
        output  # noqa: B018


def test_saving_inside_a_function_scope(toy_net):
    model = NNsight(toy_net)
    scale = 2.0

    def run(x):
        with model.trace(x):
            layers = [model.layer1, model.layer2]
            outs = [layer.output * scale for layer in layers]
            saved = nnsight.save(outs)
        return saved

    x = torch.rand(1, 5)
    saved = run(x)
    hidden = toy_net.layer1(x)
    assert torch.allclose(saved[0], hidden * 2) and torch.allclose(
        saved[1], toy_net.layer2(hidden) * 2
    )


def test_out_of_order_read_raises(toy_net):
    model = NNsight(toy_net)
    with pytest.raises(OutOfOrderError, match=r"model\.layer1\.output"):
        with model.trace(torch.rand(1, 5)):
            model.layer2.output.save()
            model.layer1.output.save()


def test_module_never_reached_raises():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = torch.nn.Linear(5, 2), torch.nn.Linear(5, 2)

        def forward(self, x):
            return self.used(x)

    model = NNsight(Net())
    with pytest.raises(nnsight.NotReachedError, match=r"model\.unused\.output"):
        with model.trace(torch.rand(1, 5)):
            model.unused.output.save()


def test_reading_outside_a_trace_is_a_clear_error(toy_net):
    model = NNsight(toy_net)
    with pytest.raises(nnsight.TracingError, match="inside a trace body"):
        model.layer1.output  # noqa: B018


def test_output_keeps_the_type_the_module_returns():
    class Pair(torch.nn.Module):
        def forward(self, x):
            return x + 1, {"double": x * 2}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            a, b = self.pair(x)
            return a + b["double"]

    model = NNsight(Net())
    x = torch.ones(2, 3)
    with model.trace(x):
        pair = model.pair.output.save()
        model.pair.output[1]["double"][:] = 0
        out = model.output.save()
    assert isinstance(pair, tuple) and isinstance(pair[1], dict)
    assert torch.equal(out, x + 1)


def test_print_inside_body(toy_net, capsys):
    model = NNsight(toy_net)
    with model.trace(torch.rand(1, 5)):
        print("shape:", model.layer1.output.shape)
    assert "shape: torch.Size([1, 10])" in capsys.readouterr().out
