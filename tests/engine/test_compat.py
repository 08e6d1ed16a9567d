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


# -- nnsight's names and constructor options ---------------------------------------


def test_envoy_is_exported_and_every_envoy_knows_its_path(toy_net):
    model = NNsight(toy_net)
    assert isinstance(model, nnsight.Envoy) and type(model.layer1) is nnsight.Envoy
    assert model.path == "model" and model.layer1.path == "model.layer1"


def test_an_envoy_made_from_a_bare_module_is_a_traceable_model(toy_net):
    # nnsight's root envoy is the model: `Envoy(net).trace(x)` is how its own tests trace.
    model = nnsight.Envoy(toy_net)
    assert isinstance(model, NNsight) and isinstance(model.layer1, nnsight.Envoy)
    x = torch.rand(2, 5)
    with model.trace(x):
        hidden = model.layer1.output.clone().save()
        model.layer1.output[:] = 0
        out = model.output.save()
    torch.testing.assert_close(hidden, toy_net.layer1(x), rtol=0, atol=0)
    torch.testing.assert_close(out, toy_net.layer2(torch.zeros_like(hidden)), rtol=0, atol=0)


class _Custom(nnsight.Envoy):
    pass


def test_an_envoy_subclass_made_from_a_bare_module_is_that_subclass_and_a_model(toy_net):
    model = _Custom(toy_net)
    assert isinstance(model, _Custom) and isinstance(model, NNsight)
    assert type(model.layer1) is nnsight.Envoy  # its children are plain envoys, as in nnsight
    x = torch.rand(2, 5)
    with model.trace(x):
        hidden = model.layer1.output.save()
    torch.testing.assert_close(hidden, toy_net.layer1(x), rtol=0, atol=0)


def test_envoys_know_parent_root_device_and_get_paths(toy_net):
    model = NNsight(toy_net)
    assert model.parent is None and model.layer1.parent is model and model.layer2.root is model
    assert model.device == torch.device("cpu") and model.devices == {torch.device("cpu")}
    assert NNsight(torch.nn.ReLU()).device is None
    assert model.get("layer2") is model.layer2
    x = torch.rand(2, 5)
    with model.trace(x):
        out = model.get("layer2.output").save()
    torch.testing.assert_close(out, toy_net(x), rtol=0, atol=0)


def test_nnsight_0_8_names():
    assert nnsight.TransformersModel is nnsight.LanguageModel
    assert issubclass(nnsight.NNsightDeprecationWarning, nnsight.NNsightWarning)
    # a FutureWarning, as nnsight's: Python's default filters hide DeprecationWarning
    assert issubclass(nnsight.NNsightDeprecationWarning, FutureWarning)
    assert not issubclass(nnsight.NNsightDeprecationWarning, DeprecationWarning)
    for name in ("Envoy", "TransformersModel", "NNsightDeprecationWarning"):
        assert name in nnsight.__all__


class _Scaled(nnsight.Envoy):
    """A custom envoy, as users of `envoys=` write them: adds a helper for trace bodies."""

    def doubled(self):
        return self.output * 2


class _Other(nnsight.Envoy):
    pass


def test_envoys_by_module_class_give_custom_envoys_that_work_in_a_trace(toy_net):
    model = NNsight(toy_net, envoys={torch.nn.Linear: _Scaled})
    assert type(model.layer1) is _Scaled and type(model.layer2) is _Scaled
    assert type(model) is NNsight
    x = torch.rand(2, 5)
    with model.trace(x):
        doubled = model.layer1.doubled().save()
        out = model.output.save()
    assert torch.allclose(doubled, toy_net.layer1(x) * 2)
    assert torch.equal(out, toy_net(x))


def test_envoys_by_name_path_suffix_one_class_and_alias(toy_net):
    by_name = NNsight(toy_net, envoys={"layer2": _Scaled})
    assert type(by_name.layer1) is nnsight.Envoy and type(by_name.layer2) is _Scaled
    by_path = NNsight(toy_net, envoys={"model.layer1": _Other, torch.nn.Linear: _Scaled})
    assert type(by_path.layer1) is _Scaled  # a class key wins over a path key
    assert type(NNsight(toy_net, envoys=_Other).layer2) is _Other
    aliased = NNsight(toy_net, rename={"layer2": "head"}, envoys={"head": _Scaled})
    assert type(aliased.layer2) is _Scaled and aliased.head is aliased.layer2


def test_envoys_with_a_star_key_on_a_module_list():
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("blocks", torch.nn.ModuleList([torch.nn.Linear(3, 3) for _ in range(2)]))
    model = NNsight(net, envoys={"blocks.*": _Scaled})
    assert type(model.blocks) is nnsight.Envoy
    assert [type(b) for b in model.blocks] == [_Scaled, _Scaled]


def test_rename_gives_aliases_that_are_the_same_envoys(toy_net):
    model = NNsight(toy_net, rename={"layer1": "first", "layer2": ["second", "last"]})
    assert model.first is model.layer1 and model.first.path == "model.layer1"
    assert model.second is model.layer2 and model.last is model.layer2
    x = torch.rand(2, 5)
    with model.trace(x):
        model.first.output[:] = 0
        hidden = model.layer1.output.save()
        out = model.last.output.save()
    assert torch.count_nonzero(hidden) == 0
    assert torch.allclose(out, toy_net.layer2(torch.zeros(2, 10)))
    assert len(list(model.modules())) == 3  # aliases are no extra modules


def _stack():
    """`transformer.h[i].attn`/`.proj`, the shape of a transformer, from plain modules."""
    torch.manual_seed(0)
    blocks = []
    for _ in range(2):
        block = torch.nn.Sequential()
        block.add_module("attn", torch.nn.Linear(4, 4))
        block.add_module("proj", torch.nn.Linear(4, 4))
        blocks.append(block)
    body = torch.nn.Sequential()
    body.add_module("h", torch.nn.Sequential(*blocks))
    net = torch.nn.Sequential()
    net.add_module("transformer", body)
    return net


def test_rename_with_dotted_keys_stars_classes_and_dotted_aliases():
    net = _stack()
    model = NNsight(net, rename={"transformer.h": "layers", "attn": "self_attn", "*.h": "blocks"})
    assert model.layers is model.transformer.h and model.blocks is model.transformer.h
    assert model.layers[1].self_attn is model.transformer.h[1].attn
    assert model.layers[1].self_attn.path == "model.transformer.h.1.attn"
    x = torch.rand(3, 4)
    with model.trace(x):
        attn = model.layers[1].self_attn.output.save()
    assert torch.allclose(attn, net.transformer.h[1].attn(net.transformer.h[0](x)))
    dotted = NNsight(_stack(), rename={"transformer.h": ["layers", "transformer.stack"]})
    assert dotted.transformer.stack is dotted.transformer.h is dotted.layers
    relu = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    assert NNsight(relu, rename={torch.nn.ReLU: "act"}).act.path == "model.1"
    skipped = NNsight(_stack(), rename={"mlp": "ffn"})  # a key that names nothing here
    assert not hasattr(skipped.transformer.h[0], "ffn")


@pytest.mark.parametrize(
    ("rename", "match"),
    [
        ({"layer1": "layer2"}, "would shadow a child module"),
        ({"layer1": "training"}, "would shadow an attribute of the wrapped module"),
        ({"layer1": "trace"}, "would shadow the envoy attribute `Envoy.trace`"),
        ({torch.nn.Linear: "linear"}, "matches 2 modules"),
        ({"layer1": "nope.first"}, "dotted alias"),
    ],
)
def test_rename_that_would_hide_something_is_a_value_error(toy_net, rename, match):
    with pytest.raises(ValueError, match=match):
        NNsight(toy_net, rename=rename)


def test_both_edit_forms_bind_what_they_say(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(2, 5)
    with model.edit() as edited:
        model.layer1.output[:] = 0
    with model.edit() as (tracer, paired):
        paired.layer2.output[:] = 1
    assert isinstance(edited, NNsight) and isinstance(paired, NNsight)
    assert hasattr(tracer, "iter") and not isinstance(tracer, NNsight)
    with edited.trace(x):
        zeroed = edited.output.save()
    with paired.trace(x):
        ones = paired.output.save()
    with model.trace(x):
        plain = model.output.save()
    assert torch.allclose(zeroed, toy_net.layer2(torch.zeros(2, 10)))
    assert torch.equal(ones, torch.ones(2, 2))
    assert torch.equal(plain, toy_net(x))


def test_envoys_keyed_by_a_path_written_in_aliases():
    rename = {"transformer.h": "layers", "attn": "self_attn"}
    model = NNsight(_stack(), rename=rename, envoys={"layers.*.self_attn": _Scaled})
    assert [type(b.attn) for b in model.transformer.h] == [_Scaled, _Scaled]
    assert type(model.layers[0].proj) is nnsight.Envoy
