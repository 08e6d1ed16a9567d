"""nnsight idioms that must work unchanged, each compared with plain torch (every test
runs with both ways of running a body: stepped and in a greenlet)."""

from __future__ import annotations

import pytest
import torch

import nnsight_lab as nnsight
from nnsight_lab import NNsight
from nnsight_lab.errors import TracingError


def test_module_methods_that_return_self_return_the_wrapper(toy_net):
    model = NNsight(toy_net).to("cpu")
    assert isinstance(model, NNsight)
    assert model.eval() is model
    assert model.train(False) is model
    assert model.float() is model
    assert model.requires_grad_(True) is model
    assert model.layer1.cpu() is model.layer1
    assert model.parameters is not None and list(model.parameters()) == list(toy_net.parameters())
    x = torch.rand(2, 5)
    with model.trace(x):
        hidden = model.layer1.output.save()
        out = model.output.save()
    assert torch.equal(hidden, toy_net.layer1(x))
    assert torch.equal(out, toy_net(x))


def test_a_dtype_method_returns_the_wrapper_and_the_trace_runs_in_that_dtype(toy_net):
    model = NNsight(toy_net).double()
    assert isinstance(model, NNsight)
    x = torch.rand(1, 5, dtype=torch.float64)
    with model.trace(x):
        out = model.output.save()
    assert out.dtype == torch.float64
    assert torch.equal(out, toy_net(x))


def test_a_trace_with_no_input_raises_a_value_error_as_nnsight_does(toy_net):
    model = NNsight(toy_net)
    with pytest.raises(ValueError, match="no input") as raised:
        with model.trace():
            out = model.output.save()  # noqa: F841
    assert isinstance(raised.value, TracingError)


def test_an_invoke_inside_an_invoke_raises_a_value_error_as_nnsight_does(toy_net):
    model = NNsight(toy_net)
    with pytest.raises(ValueError, match="directly in the body") as raised:
        with model.trace() as tracer:
            with tracer.invoke(torch.rand(1, 5)):
                with tracer.invoke(torch.rand(1, 5)):
                    out = model.output.save()  # noqa: F841
    assert isinstance(raised.value, TracingError)


def test_an_unsaved_name_equal_to_a_saved_shared_object_is_not_written_back(toy_net):
    model = NNsight(toy_net)
    flag, n, label, nothing = False, 7, "before", "kept"
    with model.trace(torch.rand(1, 5)):
        flag = True
        keep = nnsight.save(True)
        n = 5
        five = nnsight.save(5)
        label = "x"
        letter = nnsight.save("x")
        nothing = None
        empty = nnsight.save(None)
        out = model.output.save()
    assert (flag, n, label, nothing) == (False, 7, "before", "kept")
    assert (keep, five, letter, empty) == (True, 5, "x", None)
    assert out.shape == (1, 2)


def test_shared_objects_saved_by_name_still_leave_the_trace(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(1, 5)
    with model.trace(x):
        width = model.layer1.output.shape[-1]
        nnsight.save(width)
        on = True
        on.save()
        hidden = model.layer1.output.save()
        alias = hidden
        items = nnsight.save([])
        items.append(model.output)
    assert (width, on) == (10, True)
    assert alias is hidden and torch.equal(hidden, toy_net.layer1(x))
    assert len(items) == 1 and torch.equal(items[0], toy_net(x))


def test_a_trace_opened_with_no_grad_runs_its_body_without_gradients(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(1, 5)
    with model.trace(x), torch.no_grad():
        quiet = model.layer1.output.save()
        quiet_out = model.output.save()
    with model.trace(x):
        graded = model.layer1.output.save()
    with torch.no_grad():
        plain_quiet = toy_net.layer1(x)
    plain = toy_net.layer1(x)
    assert quiet.requires_grad is plain_quiet.requires_grad is False
    assert quiet_out.requires_grad is False
    assert graded.requires_grad is plain.requires_grad is True
    assert torch.is_grad_enabled()
    assert torch.equal(quiet, plain_quiet)


def test_a_trace_inside_no_grad_runs_without_gradients(toy_net):
    model = NNsight(toy_net)
    with torch.no_grad(), model.trace(torch.rand(1, 5)):
        out = model.output.save()
    assert out.requires_grad is False


def test_a_list_made_in_the_body_of_saved_outputs_survives_the_block(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(2, 5)
    with model.trace(x):
        layer_outputs = []
        for layer in (model.layer1, model.layer2):
            layer_outputs.append(layer.output.save())
        by_name = {"first": layer_outputs[0], "second": layer_outputs[1]}
        pair = (0, layer_outputs[1])
    hidden = toy_net.layer1(x)
    assert len(layer_outputs) == 2
    assert torch.equal(layer_outputs[0], hidden)
    assert torch.equal(layer_outputs[1], toy_net.layer2(hidden))
    assert by_name["second"] is layer_outputs[1] and pair[1] is layer_outputs[1]


def test_a_list_holding_an_unsaved_value_stays_in_the_body(toy_net):
    model = NNsight(toy_net)
    with model.trace(torch.rand(1, 5)):
        mixed = [model.layer1.output.save(), model.layer2.output]
        plain = [1, 2, "three"]
    assert "mixed" not in locals() and "plain" not in locals()


def test_in_a_session_shared_objects_and_lists_leave_only_when_saved(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(1, 5)
    flag = False
    with model.session():
        with model.trace(x):
            flag = True
            keep = nnsight.save(True)
            hidden = model.layer1.output
        with model.trace(x):
            outputs = [nnsight.save(hidden), model.output.save()]
    assert flag is False and keep is True
    assert torch.equal(outputs[0], toy_net.layer1(x)) and torch.equal(outputs[1], toy_net(x))
