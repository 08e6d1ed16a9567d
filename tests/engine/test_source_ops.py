"""`.source` of nnsight 0.8: assignments as operations, `.names`, `.skip`, drills into
what a call runs, and its errors; each value compared with plain torch."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from nnsight_lab import NNsight
from nnsight_lab.engine.source import SourceNotAvailable
from nnsight_lab.errors import OutOfOrderError, TracingError


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 8)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc2(h)


class Products(nn.Module):
    """Values that are no call's return: products, a tuple literal, a stored row."""

    def forward(self, x):
        s = x * 2
        s = s + 1
        a, b = s * 2, s * 3
        g, _ = torch.chunk(x, 2, dim=1)  # one value for two names: not an operation
        c = d = a + b  # chained: not an operation
        c += 1  # augmented: not an operation
        out = torch.zeros_like(x)
        out[:, 0] = c[:, 0] + d[:, 0] + g[:, 0]
        self.last = out
        return out


class Running(nn.Module):
    """A state carried through a Python loop, as in a recurrent kernel."""

    def forward(self, x):
        s = torch.zeros_like(x)
        for _ in range(3):
            s = s * 0.5 + x
        return s


def relu_double(x):
    a = torch.relu(x)
    b = torch.add(a, a)
    return b


class Calls(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        h = self.fc(x)
        return relu_double(h)


@pytest.fixture()
def x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 8)


# -- assignments -------------------------------------------------------------------


def test_assignments_are_listed_in_execution_order_beside_calls():
    model = NNsight(Products())
    assert model.source.names == (
        "s_0",
        "s_1",
        "a_0",
        "b_0",
        "torch_chunk_0",
        "torch_zeros_like_0",
        "out_0",
        "out_1",
        "self_last_0",
    )
    assert [op.name for op in model.source] == list(model.source.names)
    rows = str(model.source).split("\n")
    assert rows[0].strip() == "0 def forward(self, x):"
    row = next(r for r in rows if "out = torch.zeros_like(x)" in r)
    assert row.split()[:3] == ["torch_zeros_like_0", "->", "7"]
    assert rows[rows.index(row) + 1].split() == ["out_0", "->", "+", "..."]
    assert list(NNsight(MLP()).source.names) == ["self_fc1_0", "torch_relu_0", "h_0", "self_fc2_0"]


def test_assignment_outputs_are_the_values_bound(x, stepped_runs):
    net = Products()
    model = NNsight(net)
    with model.trace(x):
        s0 = model.source.s_0.output.save()
        s1 = model.source.s_1.input.save()
        b = model.source.b_0.output.save()
        row = model.source.out_1.output.save()
        out = model.output.save()
    s = x * 2 + 1
    assert torch.equal(s0, x * 2) and torch.equal(s1, s) and torch.equal(b, s * 3)
    c = s * 2 + s * 3 + 1  # `c += 1` is in place: `d`, the same tensor, has it too
    assert torch.equal(row, c[:, 0] + c[:, 0] + x[:, 0])
    assert torch.equal(out, net(x)) and torch.equal(net.last, out)


def test_editing_an_assignment_rebinds_the_name(x, stepped_runs):
    net = MLP()
    model = NNsight(net)
    zeros = torch.zeros(2, 8)
    with model.trace(x):
        model.source.h_0.output = zeros
        out = model.output.save()
    assert torch.equal(out, net.fc2(zeros))
    with model.trace(x):
        model.source.h_0.output[:, :4] = 0
        out = model.output.save()
    h = torch.relu(net.fc1(x))
    h[:, :4] = 0
    assert torch.equal(out, net.fc2(h))


def test_a_loop_state_is_one_operation_per_iteration(x):
    model = NNsight(Running())
    states = []
    with model.trace(x) as tracer:
        for _ in tracer.iter[:3]:
            states.append(model.source.s_1.output.save())
    s = torch.zeros_like(x)
    assert len(states) == 3
    for state in states:
        s = s * 0.5 + x
        assert torch.equal(state, s)
    with model.trace(x) as tracer:
        for _ in tracer.iter[1]:
            model.source.s_1.output = torch.zeros_like(x)
        out = model.output.save()
    assert torch.equal(out, x)  # zeroed after the second step, then one more


# -- skip --------------------------------------------------------------------------


def test_skipping_a_call_uses_the_value_and_does_not_call(x):
    net = MLP()
    model = NNsight(net)
    v = torch.full((2, 8), 2.0)
    calls = []
    hook = net.fc1.register_forward_hook(lambda *_: calls.append(1))
    try:
        with model.trace(x):
            model.source.self_fc1_0.skip(v)
            fc1 = model.source.self_fc1_0.output.save()
            out = model.output.save()
    finally:
        hook.remove()
    assert calls == [] and torch.equal(fc1, v)
    assert torch.equal(out, net.fc2(torch.relu(v)))


def test_skipping_an_assignment_binds_the_value(x):
    net = MLP()
    model = NNsight(net)
    v = torch.full((2, 8), 3.0)
    with model.trace(x):
        model.source.h_0.skip(v)
        out = model.output.save()
    assert torch.equal(out, net.fc2(v))


def test_skipping_an_operation_of_a_drilled_function(x):
    net = Calls()
    model = NNsight(net)
    sentinel = torch.full((2, 8), 7.0)
    with model.trace(x):
        model.source.relu_double_0.source.torch_add_0.skip(sentinel)
        out = model.source.relu_double_0.output.save()
    assert torch.equal(out, sentinel)


def test_skipping_a_call_in_one_invoke_of_two(x):
    net = MLP()
    model = NNsight(net)
    v = torch.full((1, 8), 2.0)
    with model.trace() as tracer:
        with tracer.invoke(x[:1]):
            model.source.self_fc1_0.skip(v)
            first = model.output.save()
        with tracer.invoke(x[1:]):
            second = model.output.save()
    assert torch.allclose(first, net.fc2(torch.relu(v)))
    assert torch.allclose(second, net(x[1:]))


def test_skip_takes_a_value_not_an_envoy(x):
    model = NNsight(MLP())
    with pytest.raises(TracingError, match="takes the value to use"):
        with model.trace(x):
            model.source.self_fc1_0.skip(model.fc1)


def test_skip_after_the_call_ran_is_out_of_order(x):
    model = NNsight(MLP())
    with pytest.raises(OutOfOrderError):
        with model.trace(x):
            model.source.self_fc2_0.output.save()
            model.source.self_fc1_0.skip(torch.zeros(2, 8))


# -- listing and errors ---------------------------------------------------------------


def test_an_operation_repr_marks_its_line():
    text = repr(NNsight(MLP()).source.self_fc1_0)
    assert text.startswith("model.source.self_fc1_0:")
    marked = [line for line in text.split("\n") if "-->" in line]
    assert marked == ["    --> h = torch.relu(self.fc1(x)) <--"]
    assert "return self.fc2(h)" in text


def test_an_unknown_operation_lists_every_name():
    model = NNsight(MLP())
    with pytest.raises(AttributeError, match="available: self_fc1_0, torch_relu_0, h_0, self_fc2"):
        model.source.nope_0  # noqa: B018


def test_source_not_available_cases(x):
    model = NNsight(Calls())
    assert issubclass(SourceNotAvailable, TracingError)
    with pytest.raises(SourceNotAvailable, match="inside a trace"):
        model.source.relu_double_0.source  # noqa: B018
    with pytest.raises(SourceNotAvailable, match="assignment"):
        with model.trace(x):
            model.source.h_0.source  # noqa: B018
    with pytest.raises(SourceNotAvailable, match="submodule"):
        with model.trace(x):
            model.source.self_fc_0.source  # noqa: B018
    with pytest.raises(SourceNotAvailable, match="not a Python function"):
        with model.trace(x):
            model.source.relu_double_0.source.torch_relu_0.source  # noqa: B018
    with model.trace(x):  # the model is fine afterwards
        out = model.output.save()
    assert torch.equal(out, relu_double(model._module.fc(x)))


# -- decorators and what a call runs ----------------------------------------------------


def _opaque(func):
    def wrapper(*args, **kwargs):  # no functools.wraps: it calls what it closes over
        return func(*args, **kwargs) * 2

    return wrapper


def _fused(self, x):
    return torch.neg(x)


IMPLEMENTATIONS = {"fused": _fused}


def _dispatching(func):
    def forward(self, *args, **kwargs):  # never calls `func` itself
        implementation = IMPLEMENTATIONS.get(self.implementation) or func
        return implementation(self, *args, **kwargs)

    return forward


def _apply(func, *args):
    return func(*args)


def _indirect(func):
    @functools.wraps(func)
    def wrapper(self, x):
        return _apply(func, self, x)

    return wrapper


class Opaque(nn.Module):
    @_opaque
    def forward(self, x):
        return torch.relu(x)


class Dispatched(nn.Module):
    implementation = "fused"

    @_dispatching
    def forward(self, x):
        return torch.relu(x)


class Indirect(nn.Module):
    @_indirect
    def forward(self, x):
        return torch.relu(x)


def test_a_wrapper_calling_the_forward_is_peeled_and_still_runs(x):
    net = Opaque()
    model = NNsight(net)
    assert model.source.names == ("torch_relu_0",)
    with model.trace(x):
        relu = model.source.torch_relu_0.output.save()
        out = model.output.save()
    assert torch.equal(relu, torch.relu(x)) and torch.equal(out, torch.relu(x) * 2)


def test_a_dispatching_wrapper_is_instrumented_as_it_is(x):
    net = Dispatched()
    model = NNsight(net)
    assert "implementation_0" in model.source.names and "torch_relu_0" not in model.source.names
    with model.trace(x):
        fused = model.source.implementation_0.source.torch_neg_0.output.save()
    assert torch.equal(fused, torch.neg(x))
    net.implementation = "eager"  # the next trace's call runs another function
    with model.trace(x):
        eager = model.source.implementation_0.source.torch_relu_0.output.save()
        out = model.output.save()
    assert torch.equal(eager, torch.relu(x)) and torch.equal(out, torch.relu(x))


def test_a_wrapper_calling_through_a_helper_is_not_peeled(x):
    model = NNsight(Indirect())
    assert model.source.names == ("_apply_0",)
    with model.trace(x):
        inner = model.source._apply_0.source.func_0.source.torch_relu_0.output.save()
    assert torch.equal(inner, torch.relu(x))


def test_a_method_calling_a_closed_over_function_is_not_peeled(x):
    def helper(t):
        return torch.neg(t)

    class Closure(nn.Module):
        def forward(self, x):
            h = helper(x)
            return torch.relu(h)

    model = NNsight(Closure())
    assert model.source.names == ("helper_0", "h_0", "torch_relu_0")
    with model.trace(x):
        h = model.source.h_0.output.save()
    assert torch.equal(h, torch.neg(x))


class Processor:
    def __call__(self, x):
        return torch.relu(x)


class CallsInstance(nn.Module):
    def __init__(self):
        super().__init__()
        self.processor = Processor()

    def forward(self, x):
        return self.processor(x) + 1


def test_drilling_into_a_callable_instance(x):
    model = NNsight(CallsInstance())
    with model.trace(x):
        inner = model.source.self_processor_0.source.torch_relu_0.output.save()
        model.source.self_processor_0.source.torch_relu_0.output = torch.zeros(2, 8)
        out = model.output.save()
    assert torch.equal(inner, torch.relu(x)) and torch.equal(out, torch.ones(2, 8))


def test_accelerate_hook_runs_once_around_the_sourced_forward(x):
    from accelerate.hooks import ModelHook, add_hook_to_module

    calls = []

    class Counting(ModelHook):
        def pre_forward(self, module, *args, **kwargs):
            calls.append("pre")
            return (args[0] * 2, *args[1:]), kwargs

        def post_forward(self, module, output):
            calls.append("post")
            return output + 1

    net = MLP()
    add_hook_to_module(net, Counting())
    expected = net(x)
    calls.clear()
    model = NNsight(net)
    with model.trace(x):
        relu = model.source.torch_relu_0.output.save()
        out = model.output.save()
    assert calls == ["pre", "post"]
    assert torch.equal(out, expected)
    assert torch.equal(relu, torch.relu(net.fc1(x * 2)))


# -- GPT-2 -------------------------------------------------------------------------


def test_gpt2_attention_call_is_attention_interface_0(llm, hf_gpt2):
    # As in the seed walkthrough: the call keeps `_0`; the assignment that picks the
    # implementation (`attention_interface = ...`) is numbered after it.
    ids = llm.tokenizer("The Eiffel Tower is in", return_tensors="pt")["input_ids"]
    attn = llm.transformer.h[0].attn
    with llm.trace(ids):
        interface = attn.source.attention_interface_1.output.save()
        out = attn.source.attention_interface_0.output.save()
    assert callable(interface)
    seen = []
    hook = hf_gpt2.transformer.h[0].attn.c_proj.register_forward_pre_hook(
        lambda m, a: seen.append(a[0])
    )
    try:
        with torch.no_grad():
            hf_gpt2(ids)
    finally:
        hook.remove()
    assert torch.equal(out[0].reshape(*ids.shape, -1), seen[0])


def test_gpt2_drill_across_generation_steps(llm):
    _ = llm.transformer.h[0].attn.source
    saved = []
    with llm.generate("The Eiffel Tower is in", max_new_tokens=3) as tracer:
        for _ in tracer.iter[:3]:
            inner = llm.transformer.h[0].attn.source.attention_interface_0.source
            saved.append(inner.attn_output_transpose_0.output.save())
    assert len(saved) == 3
    assert saved[0].shape[1] > 1 and saved[1].shape[1] == 1 and saved[2].shape[1] == 1
