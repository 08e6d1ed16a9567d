"""`.source`: operations inside a forward, compared with plain torch / transformers."""

from __future__ import annotations

import functools

import pytest
import torch

from nnsight_lab import LanguageModel, NNsight
from nnsight_lab.errors import NotReachedError, OutOfOrderError, TracingError

PROMPT = "The Eiffel Tower is in"


def _ids(llm, prompt: str = PROMPT) -> torch.Tensor:
    return llm.tokenizer(prompt, return_tensors="pt")["input_ids"]


def _hooked_logits(hf_gpt2, ids: torch.Tensor, hook) -> torch.Tensor:
    """Logits of a plain forward with `hook` (a torch hook handle) removed afterwards."""
    try:
        with torch.no_grad():
            return hf_gpt2(ids).logits
    finally:
        hook.remove()


def _c_proj_input(hf_gpt2, ids: torch.Tensor) -> torch.Tensor:
    """What layer 0's attention hands to c_proj, seen by a plain forward pre-hook."""
    seen = []
    c_proj = hf_gpt2.transformer.h[0].attn.c_proj
    _hooked_logits(
        hf_gpt2, ids, c_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    )
    return seen[0]


# -- listing ---------------------------------------------------------------------


def test_listing_names_gpt2_attention_call_sites(llm):
    text = str(llm.transformer.h[0].attn.source)
    for name in ("self_c_attn_0", "attention_interface_0", "attention_interface_1", "split_1"):
        assert f" {name} " in text
    rows = text.split("\n")
    # The first call on a line is shown on the line's row, others on `+ ...` rows below it.
    split = next(i for i, row in enumerate(rows) if row.lstrip().startswith("split_1 "))
    assert rows[split - 1].lstrip().startswith("self_c_attn_1 ")
    assert rows[split].rstrip().endswith("+         ...")
    assert any(row.rstrip().endswith("0 def forward(") for row in rows)


def test_listing_of_a_decorated_forward_marks_decorators():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 3)

        @torch.no_grad()
        def forward(self, x):
            return self.fc(x).relu()

    text = str(NNsight(Net()).source)
    rows = text.split("\n")
    assert rows[0].strip() == "* @torch.no_grad()"
    assert rows[1].strip() == "0 def forward(self, x):"
    assert rows[2].split() == ["self_fc_0", "->", "1", "return", "self.fc(x).relu()"]
    assert rows[3].split() == ["relu_0", "->", "+", "..."]


# -- reading and editing operations ------------------------------------------------


def test_attention_interface_output_is_what_c_proj_receives(llm, hf_gpt2):
    ids = _ids(llm)
    with llm.trace(ids):
        attn = llm.transformer.h[0].attn.source.attention_interface_0.output.save()
    assert isinstance(attn, tuple)
    batch, seq = ids.shape
    merged = attn[0].reshape(batch, seq, -1)  # [batch, seq, heads * head_dim]
    assert torch.equal(merged, _c_proj_input(hf_gpt2, ids))


def test_operation_inputs_are_the_call_arguments(llm, hf_gpt2):
    ids = _ids(llm)
    with llm.trace(ids):
        c_attn = llm.transformer.h[0].attn.source.self_c_attn_1.input.save()
        split_inputs = llm.transformer.h[0].attn.source.split_1.inputs.save()
        pieces = llm.transformer.h[0].attn.source.split_1.output.save()
    with torch.no_grad():
        hidden = hf_gpt2.transformer.h[0].ln_1(
            hf_gpt2.transformer.wte(ids) + hf_gpt2.transformer.wpe(torch.arange(ids.shape[1]))
        )
        qkv = hf_gpt2.transformer.h[0].attn.c_attn(hidden)
    assert torch.equal(c_attn, hidden)
    args, kwargs = split_inputs
    assert args == (64,) and kwargs == {"dim": 2}  # `self` of a method call is not an argument
    assert all(torch.equal(a, b) for a, b in zip(pieces, qkv.split(64, dim=2), strict=True))


def test_editing_an_operation_changes_logits_like_the_same_edit_by_hand(llm, hf_gpt2):
    ids = _ids(llm)
    with llm.trace(ids):
        llm.transformer.h[0].attn.source.self_c_proj_0.output[:, :, :8] = 0
        logits = llm.output.logits.save()

    def zero_first_eight(module, args, output):
        output = output.clone()
        output[:, :, :8] = 0
        return output

    c_proj = hf_gpt2.transformer.h[0].attn.c_proj
    expected = _hooked_logits(hf_gpt2, ids, c_proj.register_forward_hook(zero_first_eight))
    assert torch.equal(logits, expected)


def test_replacing_an_operation_input(llm, hf_gpt2):
    ids = _ids(llm)
    with llm.trace(ids):
        x = llm.transformer.h[1].attn.source.self_c_proj_0.input
        llm.transformer.h[1].attn.source.self_c_proj_0.input = x * 2
        logits = llm.output.logits.save()
    c_proj = hf_gpt2.transformer.h[1].attn.c_proj
    expected = _hooked_logits(
        hf_gpt2, ids, c_proj.register_forward_pre_hook(lambda module, args: (args[0] * 2,))
    )
    assert torch.equal(logits, expected)


def test_untouched_rewrite_is_bit_identical(llm, hf_gpt2):
    ids = _ids(llm)
    for block in llm.transformer.h:
        str(block.source), str(block.attn.source), str(block.mlp.source)  # source them all
    with llm.trace(ids):
        llm.transformer.h[1].attn.source.attention_interface_0.output.save()
        logits = llm.output.logits.save()
    with torch.no_grad():
        expected = hf_gpt2(ids).logits
    assert torch.equal(logits, expected)


def test_sourced_block_behind_gradient_checkpointing_wrapper(llm, hf_gpt2):
    """GPT2Block's class forward is a wrapper made by GradientCheckpointingLayer."""
    ids = _ids(llm)
    assert "self_attn_0" in str(llm.transformer.h[0].source)
    with llm.trace(ids):
        attn = llm.transformer.h[0].source.self_attn_0.output.save()
        out = llm.transformer.h[0].output.save()
    hidden = []
    hooks = [
        hf_gpt2.transformer.h[0].attn.register_forward_hook(lambda m, a, o: hidden.append(o[0])),
        hf_gpt2.transformer.h[0].register_forward_hook(lambda m, a, o: hidden.append(o)),
    ]
    try:
        with torch.no_grad():
            hf_gpt2(ids)
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.equal(attn[0], hidden[0])
    expected = hidden[1][0] if isinstance(hidden[1], tuple) else hidden[1]
    actual = out[0] if isinstance(out, tuple) else out
    assert torch.equal(actual, expected)


def test_llama_attention_source(tiny_llama_path):
    from transformers import AutoModelForCausalLM

    llm = LanguageModel(str(tiny_llama_path), dispatch=True)
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()
    ids = _ids(llm)
    assert "self_o_proj_0" in str(llm.model.layers[0].self_attn.source)
    with llm.trace(ids):
        before_o = llm.model.layers[0].self_attn.source.self_o_proj_0.input.save()
        logits = llm.output.logits.save()
    seen = []
    hook = plain.model.layers[0].self_attn.o_proj.register_forward_pre_hook(
        lambda m, a: seen.append(a[0])
    )
    try:
        with torch.no_grad():
            expected = plain(ids).logits
    finally:
        hook.remove()
    assert torch.equal(before_o, seen[0])
    assert torch.equal(logits, expected)


def test_recursive_source_of_the_attention_function(llm, hf_gpt2):
    ids = _ids(llm)
    with llm.trace(ids):
        inner = llm.transformer.h[0].attn.source.attention_interface_0.source
        names = list(dir(inner)).save()
        inner_out = getattr(inner, _last_transpose(inner)).output.save()
        attn = llm.transformer.h[0].attn.source.attention_interface_0.output.save()
    assert names
    assert torch.equal(inner_out, attn[0])


def _last_transpose(view) -> str:
    """The operation the attention function returns through (`...transpose_0`)."""
    return [name for name in dir(view) if "transpose" in name][-1]


# -- errors ----------------------------------------------------------------------


def test_branch_that_did_not_run_says_not_executed(llm):
    with pytest.raises(NotReachedError, match=r"self_q_attn_0.*did not execute"):
        with llm.trace(PROMPT):
            llm.transformer.h[0].attn.source.self_q_attn_0.output.save()


def test_unknown_operation_lists_close_names(llm):
    with pytest.raises(AttributeError, match=r"self_c_attn_0"):
        llm.transformer.h[0].attn.source.self_c_atn_0  # noqa: B018


def test_reading_operations_out_of_order(llm):
    with pytest.raises(OutOfOrderError):
        with llm.trace(PROMPT):
            llm.transformer.h[0].attn.source.self_c_proj_0.output.save()
            llm.transformer.h[0].attn.source.split_1.output.save()


def test_source_of_a_module_without_python_source(toy_net):
    model = NNsight(toy_net)
    exec("def forward(x):\n    return x\n", namespace := {})
    toy_net.layer1.forward = namespace["forward"]
    with pytest.raises(TracingError, match="not available"):
        model.layer1.source  # noqa: B018


def test_source_of_a_non_module(toy_net):
    from nnsight_lab.engine.source import source_view

    with pytest.raises(TracingError, match="not a torch.nn.Module"):
        source_view(toy_net.layer1.weight, "model.layer1.weight")


# -- custom modules ----------------------------------------------------------------


def _doubled(fn):
    @functools.wraps(fn)
    def wrapper(self, x):
        return fn(self, x) * 2

    return wrapper


SCALE = 3.0


class _Decorated(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.__bias = 1.0  # name-mangled: the rewrite must mangle it the same way

    @_doubled
    def forward(self, x):
        h = torch.relu(self.fc(x)) + self.__bias
        return h * SCALE + len(super().extra_repr())  # zero-argument super() still works


def test_custom_module_with_decorated_forward():
    torch.manual_seed(0)
    net = _Decorated()
    x = torch.randn(2, 4)
    with torch.no_grad():
        expected = net(x)
        relu_expected = torch.relu(net.fc(x))
    model = NNsight(net)
    text = str(model.source)
    assert "torch_relu_0" in text and "* @_doubled" in text
    with model.trace(x):
        relu = model.source.torch_relu_0.output.save()
        out = model.output.save()
    assert torch.equal(relu, relu_expected)
    assert torch.equal(out, expected)  # the decorator still doubles


def test_rewrite_keeps_closures_and_live_globals():
    global SCALE
    factor = torch.tensor(5.0)

    class Closed(torch.nn.Module):
        def forward(self, x):
            return torch.mul(x, factor) * SCALE

    x = torch.ones(2)
    model = NNsight(Closed())
    with model.trace(x):
        mul = model.source.torch_mul_0.output.save()
        out = model.output.save()
    assert torch.equal(mul, x * 5)
    assert torch.equal(out, x * 5 * SCALE)
    old, SCALE = SCALE, 7.0
    try:
        with model.trace(x):
            out = model.output.save()
        assert torch.equal(out, x * 35)  # the module's globals are read live, not copied
    finally:
        SCALE = old


def test_model_unchanged_outside_traces_after_source(toy_net):
    x = torch.rand(1, 5)
    expected = toy_net(x)
    keys = {name: sorted(m.__dict__) for name, m in toy_net.named_modules()}
    model = NNsight(toy_net)
    with model.trace(x):
        model.layer1.source.F_linear_0.output.save()
    assert {name: sorted(m.__dict__) for name, m in toy_net.named_modules()} == keys
    assert torch.equal(toy_net(x), expected)


class _Relu(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def _negated(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.neg(self.fc(x))


def test_a_forward_set_after_source_is_the_one_traced(stepped_runs):
    import types

    net = _Relu()
    model = NNsight(net)
    x = torch.rand(2, 4)
    with model.trace(x):
        relu = model.source.torch_relu_0.output.save()
    assert torch.equal(relu, torch.relu(net.fc(x)))
    net.forward = types.MethodType(_negated, net)  # a forward with source: its operations
    assert "torch_neg_0" in model.source.names and "torch_relu_0" not in model.source.names
    with model.trace(x):
        neg = model.source.torch_neg_0.output.save()
        out = model.output.save()
    assert torch.equal(neg, -net.fc(x)) and torch.equal(out, net(x))
    net.forward = lambda inp: torch.full((inp.shape[0], 4), 3.0)  # no source: it just runs
    with model.trace(x):
        out = model.output.save()
    assert torch.equal(out, torch.full((2, 4), 3.0)) and torch.equal(out, net(x))


def test_sourcing_does_not_keep_a_module_alive():
    import gc
    import weakref

    from nnsight_lab.engine.source import source_view

    net = torch.nn.Linear(2, 2)
    assert "F_linear_0" in str(source_view(net, "model"))
    freed = weakref.ref(net)
    del net
    gc.collect()
    assert freed() is None


def test_source_of_a_weight_in_a_trace_is_a_clear_error(toy_net):
    model = NNsight(toy_net)
    with pytest.raises(TracingError, match="not a module"):
        with model.trace(torch.rand(1, 5)):
            model.layer1.weight.source  # noqa: B018
