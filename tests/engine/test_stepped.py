"""Which bodies run stepped (as generators, no greenlet), and that they give what the
greenlet path gives: plain torch's values, the same errors."""

from __future__ import annotations

import types

import pytest
import torch

import nnsight_lab as nnsight
from nnsight_lab import NNsight, save


def _read_layer2(model):
    return model.layer2.output


def _read_first(model):
    return model[0].output


def test_simple_bodies_run_stepped(toy_net, runner, stepped_runs):
    model = NNsight(toy_net)
    x = torch.rand(3, 5)
    with model.trace(x):
        idx = torch.argmax(model.layer1.output, dim=1).save()
        model.layer1.output[:, 0] = 0
        total = nnsight.save(model.layer2.output.sum(dim=-1))
        same = save(total)
        print(len(idx))
    hidden = toy_net.layer1(x)
    expected_idx = torch.argmax(hidden, dim=1)
    hidden[:, 0] = 0
    assert torch.equal(idx, expected_idx)
    assert torch.allclose(total, toy_net.layer2(hidden).sum(dim=-1)) and same is total
    assert len(stepped_runs) == (1 if runner == "stepped" else 0)


def test_a_backward_block_runs_stepped_and_matches_autograd(toy_net, runner, stepped_runs):
    model = NNsight(toy_net)
    x = torch.rand(3, 5)
    with model.trace(x):
        hidden = model.layer1.output
        loss = model.output.sum()
        with loss.backward():
            grad = hidden.grad.clone().save()
            hidden.grad = hidden.grad * 0.5
        after = nnsight.save(loss * 2)
    traced_weight_grad = toy_net.layer1.weight.grad.clone()
    plain_hidden = toy_net.layer1(x)
    plain_loss = toy_net.layer2(plain_hidden).sum()
    (expected_grad,) = torch.autograd.grad(plain_loss, [plain_hidden], retain_graph=True)
    toy_net.zero_grad()
    plain_hidden.register_hook(lambda g: g * 0.5)  # the edit, in plain torch
    plain_loss.backward()
    assert torch.allclose(grad, expected_grad)
    assert torch.allclose(traced_weight_grad, toy_net.layer1.weight.grad)
    assert torch.allclose(after, plain_loss * 2)
    assert len(stepped_runs) == (1 if runner == "stepped" else 0)


def test_a_failing_backward_is_raised_in_the_block(toy_net, runner):
    model = NNsight(toy_net)
    with pytest.raises(RuntimeError, match="second time") as info:
        with model.trace(torch.rand(1, 5)):
            hidden = model.layer1.output
            loss = model.output.sum()
            with loss.backward():
                hidden.grad.save()
            with loss.backward():  # the graph is freed: torch refuses
                hidden.grad.save()  # waits here
    users = [entry for entry in info.traceback if str(entry.path) == __file__]
    block = {  # the second block's `with` line (greenlet), or where it waited (stepped)
        "with loss.backward():  # the graph is freed: torch refuses",
        "hidden.grad.save()  # waits here",
    }
    assert users[-1].statement.lines[0].strip() in block


def _doubled_relu(x):
    y = x * 2
    return torch.relu(y)


class _CallsAFunction(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return _doubled_relu(self.lin(x)) + 1


def test_source_of_an_operation_waits_for_its_call(runner, stepped_runs):
    net = _CallsAFunction()  # a fresh class: the function's operations are not known yet
    model = NNsight(net)
    x = torch.randn(3, 4)
    with model.trace(x):
        relu = model.source._doubled_relu_0.source.torch_relu_0.output.save()
        model.source._doubled_relu_0.output = relu * 0
        out = model.output.save()
    assert torch.equal(relu, torch.relu(net.lin(x) * 2))
    assert torch.equal(out, torch.ones(3, 4))
    assert len(stepped_runs) == (1 if runner == "stepped" else 0)


class _CallsItOnlyForHugeInputs(torch.nn.Module):
    def forward(self, x):
        if x.abs().max() > 1e9:
            return _doubled_relu(x)
        return x


def test_source_of_an_operation_that_never_runs_says_not_executed(runner):
    model = NNsight(_CallsItOnlyForHugeInputs())  # a fresh class, as above
    with pytest.raises(nnsight.NotReachedError, match=r"_doubled_relu_0.*did not execute"):
        with model.trace(torch.ones(2, 4)):
            model.source._doubled_relu_0.source.torch_relu_0.output.save()


def test_a_helper_that_reads_a_module_runs_in_a_greenlet(toy_net, stepped_runs):
    model = NNsight(toy_net)
    x = torch.rand(2, 5)
    with model.trace(x):
        first = model.layer1.output.save()
        second = _read_layer2(model).save()  # waits inside the helper: needs a greenlet
    assert torch.allclose(first, toy_net.layer1(x))
    assert torch.allclose(second, toy_net(x))
    assert stepped_runs == []


def test_a_method_of_the_users_own_runs_in_a_greenlet(toy_net, stepped_runs):
    model = NNsight(toy_net)
    reader = types.SimpleNamespace(read=lambda: model.layer2.output)
    with model.trace(torch.rand(2, 5)):
        out = reader.read().save()
    assert out.shape == (2, 2) and stepped_runs == []


def test_input_writes_and_whole_replacement_match_plain_torch(toy_net):
    model = NNsight(toy_net)
    x, y = torch.rand(2, 5), torch.rand(2, 5)
    with model.trace(x):
        model.layer1.input = y
        args, kwargs = model.layer2.inputs
        model.layer2.output = model.layer2.output * 2
        out = model.output.save()
        seen = nnsight.save(args[0])
    assert torch.allclose(seen, toy_net.layer1(y))
    assert torch.allclose(out, toy_net(y) * 2)


def test_output_of_an_object_that_is_not_a_module(toy_net):
    model = NNsight(toy_net)
    record = types.SimpleNamespace(output=1)
    with model.trace(torch.rand(1, 5)):
        record.output = record.output + 1
        out = model.output.save()
    assert record.output == 2 and out.shape == (1, 2)


def test_a_missing_attribute_points_at_the_users_line(toy_net):
    model = NNsight(toy_net)
    with pytest.raises(AttributeError) as info:
        with model.trace(torch.rand(1, 5)):
            value = object().output  # noqa: F841
    assert info.traceback[-1].statement.lines[0].strip().startswith("value = object().output")


def test_names_the_body_does_not_save_stay_inside(toy_net):
    model = NNsight(toy_net)
    with model.trace(torch.rand(1, 5)):
        hidden = model.layer1.output
        kept = model.layer2.output.save()
    assert kept.shape == (1, 2)
    with pytest.raises(NameError):
        hidden  # noqa: B018


def test_stop_ends_the_forward_early(toy_net):
    model = NNsight(toy_net)
    calls = []
    toy_net.layer2.register_forward_hook(lambda *_: calls.append(1))
    with model.trace(torch.rand(1, 5)) as tracer:
        hidden = model.layer1.output.save()
        tracer.stop()
    assert hidden.shape == (1, 10) and calls == []


def test_a_read_hidden_in_the_users_own_object_runs_in_a_greenlet(toy_net, runner, stepped_runs):
    model = NNsight(toy_net)

    class Late:
        def __format__(self, spec):  # an f-string calls this: code the body cannot see
            return str(model.layer2.output.shape)

    late = Late()
    with model.trace(torch.rand(1, 5)):
        text = f"{late}".save()
    assert text == "torch.Size([1, 2])" and stepped_runs == []
    with model.trace(torch.rand(1, 5)):  # the model is left as it was
        out = model.output.save()
    assert out.shape == (1, 2)


def test_a_stepped_body_in_one_thread_does_not_answer_for_another(toy_net):
    import threading

    model_a, model_b = NNsight(toy_net), NNsight(torch.nn.Sequential(torch.nn.Linear(5, 3)))
    inside, done = threading.Event(), threading.Event()

    class Gate(list):
        def append(self, value):  # the user's own list: the body runs in a greenlet
            inside.set()
            done.wait(timeout=30)
            super().append(value)

    gate, results = Gate(), {}

    def run_a():
        with model_a.trace(torch.rand(1, 5)):
            gate.append(model_a.layer1.output.shape)
            out = model_a.output.save()
        results["a"] = out

    thread = threading.Thread(target=run_a)
    thread.start()
    try:
        assert inside.wait(timeout=30)  # thread a is in the middle of a stepped step
        x = torch.rand(2, 5)
        with model_b.trace(x):
            out_b = _read_first(model_b).save()  # a greenlet body: asks who is running
        assert torch.allclose(out_b, model_b._model(x))
    finally:
        done.set()
        thread.join(timeout=30)
    assert results["a"].shape == (1, 2) and gate == [torch.Size([1, 10])]


class _Twice(torch.nn.Module):
    """Calls one block twice per forward: two steps of `shared` in one pass."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.shared(torch.relu(self.shared(x)))


def test_iter_steps_through_calls_of_one_module_in_a_forward():
    net = _Twice()
    model = NNsight(net)
    x = torch.rand(2, 4)
    with model.trace(x) as tracer:
        outs = nnsight.save(list())
        for step in tracer.iter[0:2]:
            outs.append((step, model.shared.output.clone()))
        out = model.output.save()
    first = net.shared(x)
    assert [s for s, _ in outs] == [0, 1]
    assert torch.allclose(outs[0][1], first) and torch.allclose(outs[1][1], net(x))
    assert torch.allclose(out, net(x))


def test_an_unbounded_iter_that_reads_nothing_runs_once_and_warns():
    model = NNsight(_Twice())
    with pytest.warns(nnsight.NNsightWarning, match="reads no module"):
        with model.trace(torch.rand(1, 4)) as tracer:
            count = nnsight.save([0])
            with tracer.iter[:]:
                count[0] += 1
            out = model.output.save()
    assert count == [1] and out.shape == (1, 4)
