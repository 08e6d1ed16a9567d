"""Whole workflows on several architectures, each against plain torch / transformers.

A vision transformer, a Mamba state-space model, a toy module that calls one
submodule twice, and the guide's patching workflows on GPT-2 and Llama. Every
reference is computed without the engine: plain calls with forward hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn
from transformers import MambaConfig, MambaForCausalLM, ViTConfig, ViTModel

import nnsight_lab as nnsight
from nnsight_lab import LanguageModel, NNsight, OutOfOrderError

CLEAN, CORRUPTED = "The Eiffel Tower is in", "The Colosseum is in"
MAMBA_IDS = torch.tensor([[17, 402, 9, 88, 311]])


@contextmanager
def _hooked(edits: dict[nn.Module, Callable]) -> Iterator[None]:
    """Forward hooks `fn(output) -> new output or None` on modules, removed afterwards."""
    handles = [
        m.register_forward_hook(lambda _m, _a, out, fn=fn: fn(out)) for m, fn in edits.items()
    ]
    try:
        with torch.no_grad():
            yield
    finally:
        for handle in handles:
            handle.remove()


def _at_call(index: int, fn: Callable) -> Callable:
    """A hook body that applies `fn` only at the `index`-th call of its module."""
    calls = [0]

    def hook(out):
        calls[0] += 1
        return fn(out) if calls[0] - 1 == index else None

    return hook


def _zero_row(row: int) -> Callable:
    def zero(out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, row] = 0
        return out

    return zero


# -- a vision transformer ----------------------------------------------------


@pytest.fixture(scope="module")
def vit() -> ViTModel:
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    return ViTModel(config).eval()


def test_vit_reads_layers_and_the_final_hidden_state(vit):
    model = NNsight(vit)
    x = torch.rand(2, 3, 32, 32)
    with model.trace() as tracer:
        with tracer.invoke(pixel_values=x):
            layer0 = model.layers[0].output.save()
            last = model.output.last_hidden_state.save()
    plain = []
    with _hooked({vit.layers[0]: plain.append}):
        expected = vit(pixel_values=x).last_hidden_state
    assert layer0.shape == (2, 17, 32) and torch.allclose(layer0, plain[0], atol=1e-6)
    assert torch.allclose(last, expected, atol=1e-6)


def test_vit_keyword_only_trace_input(vit):
    """As in nnsight, `model.trace(pixel_values=x)` is the trace's (only) input."""
    model = NNsight(vit)
    x = torch.rand(2, 3, 32, 32)
    with model.trace(pixel_values=x):
        last = model.output.last_hidden_state.save()
    with torch.no_grad():
        assert torch.allclose(last, vit(pixel_values=x).last_hidden_state, atol=1e-6)


def test_vit_zeroing_the_cls_row_matches_a_hook(vit):
    model = NNsight(vit)
    x = torch.rand(2, 3, 32, 32)
    with model.trace(x):
        model.layers[0].output[:, 0] = 0
        pooled = model.output.pooler_output.save()
        last = model.output.last_hidden_state.save()
    with _hooked({vit.layers[0]: _zero_row(0)}):
        expected = vit(pixel_values=x)
    assert torch.allclose(last, expected.last_hidden_state, atol=1e-6)
    assert torch.allclose(pooled, expected.pooler_output, atol=1e-6)
    assert not torch.allclose(last, vit(pixel_values=x).last_hidden_state, atol=1e-3)


# -- Mamba (a state-space model, pure-torch path) ----------------------------


@pytest.fixture(scope="module")
def mamba(gpt2_tokenizer) -> tuple[MambaForCausalLM, LanguageModel]:
    torch.manual_seed(0)
    config = MambaConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, state_size=4)
    hf = MambaForCausalLM(config).eval()
    return hf, LanguageModel(hf, tokenizer=gpt2_tokenizer)


def test_mamba_reads_and_patches_a_block(mamba):
    hf, model = mamba
    with model.trace(MAMBA_IDS):
        block0 = model.backbone.layers[0].output.clone().save()
        model.backbone.layers[1].output[:, -1] *= 2
        logits = model.lm_head.output.save()
    plain = []

    def double_last(out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, -1] *= 2
        return out

    with _hooked({hf.backbone.layers[0]: plain.append, hf.backbone.layers[1]: double_last}):
        expected = hf(MAMBA_IDS).logits
    assert torch.allclose(block0, plain[0], atol=1e-6)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_mamba_generate_per_step_argmax_with_an_edit(mamba):
    hf, model = mamba
    with model.generate(MAMBA_IDS, max_new_tokens=4) as tracer:
        tokens = nnsight.save([])
        with tracer.iter[:] as step:
            if step == 1:
                model.backbone.layers[0].output[:] = 0
            tokens.append(model.lm_head.output[0, -1].argmax().item())
    argmaxes = []
    edits = {
        hf.backbone.layers[0]: _at_call(1, torch.zeros_like),
        hf.lm_head: lambda out: argmaxes.append(out[0, -1].argmax().item()),
    }
    with _hooked(edits):
        ids = hf.generate(
            MAMBA_IDS, max_new_tokens=4, do_sample=False, pad_token_id=model.tokenizer.pad_token_id
        )
    with torch.no_grad():
        unedited = hf.generate(MAMBA_IDS, max_new_tokens=4, do_sample=False)
    assert tokens == argmaxes
    assert tokens == ids[0, MAMBA_IDS.shape[1] :].tolist()
    assert ids.tolist() != unedited.tolist()  # the edit matters (here it makes step 1 EOS)


# -- a module called twice in one forward --------------------------------------


class TwoSteps(nn.Module):
    """An RNN-like toy: the same cell applied twice, then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.cell(self.cell(x)))


@pytest.fixture()
def twice() -> tuple[TwoSteps, torch.Tensor]:
    torch.manual_seed(0)
    return TwoSteps(), torch.rand(3, 4)


def test_each_call_has_its_own_location(twice):
    net, x = twice
    model = NNsight(net)
    with model.trace(x) as tracer:
        first = model.cell.output.save()
        with tracer.iter[1]:
            second = model.cell.output.save()
    with model.trace(x) as tracer:
        ranged = nnsight.save([])
        with tracer.iter[0:2] as step:
            ranged.append((step, model.cell.output))
    with model.trace(x) as tracer:
        looped = nnsight.save([])
        for step in tracer.iter[:]:
            looped.append((step, model.cell[0].output))
    with torch.no_grad():
        h1 = net.cell(x)
        h2 = net.cell(h1)
    assert torch.allclose(first, h1) and torch.allclose(second, h2)
    assert [s for s, _ in ranged] == [0, 1]
    assert torch.allclose(ranged[0][1], h1) and torch.allclose(ranged[1][1], h2)
    assert [s for s, _ in looped] == [0, 1]
    assert torch.allclose(looped[0][1], net.cell[0](x))
    assert torch.allclose(looped[1][1], net.cell[0](h1))


def test_patching_one_call(twice):
    net, x = twice
    model = NNsight(net)
    with model.trace(x) as tracer:
        with tracer.iter[1]:
            model.cell.output = model.cell.output * 2
        second_patched = model.output.save()
    with model.trace(x):
        model.cell.output[:] = 0
        first_patched = model.output.save()
    with torch.no_grad():
        expected_second = net.head(2 * net.cell(net.cell(x)))
        expected_first = net.head(net.cell(torch.zeros_like(x)))
    assert torch.allclose(second_patched, expected_second)
    assert torch.allclose(first_patched, expected_first)


def test_reading_the_first_call_after_the_second_is_out_of_order(twice):
    net, x = twice
    model = NNsight(net)
    with pytest.raises(OutOfOrderError, match=r"model\.cell\.output"):
        with model.trace(x) as tracer:
            with tracer.iter[1]:
                model.cell.output.save()
            model.cell.output.save()


# -- the guide's workflows on GPT-2 and Llama ------------------------------------


def _plain_logits(hf, tokenizer, text, edits=None) -> torch.Tensor:
    with _hooked(edits or {}):
        return hf(**tokenizer(text, return_tensors="pt")).logits


def test_gpt2_patching_sweep_over_positions(llm, hf_gpt2):
    """Workflow 2: patch the clean run's block output into the corrupted one, per position."""
    tokenizer, layer = llm.tokenizer, 0
    with llm.trace(CLEAN):
        clean = llm.transformer.h[layer].output.save()
    width = len(tokenizer(CORRUPTED)["input_ids"])
    assert width == clean.shape[1]  # both prompts are 7 tokens
    for position in range(width):
        with llm.trace(CORRUPTED):
            llm.transformer.h[layer].output[:, position, :] = clean[:, position, :]
            patched = llm.lm_head.output.save()

        def patch(out, position=position):
            out = out.clone()
            out[:, position] = clean[:, position]
            return out

        expected = _plain_logits(
            hf_gpt2, tokenizer, CORRUPTED, {hf_gpt2.transformer.h[layer]: patch}
        )
        assert torch.allclose(patched, expected, atol=1e-5), position


def test_llama_cross_prompt_patching_in_one_batch(tiny_llama_path, gpt2_tokenizer):
    """Workflow 4: one invoke's activation is written into another invoke of the same trace."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()
    model = LanguageModel(str(tiny_llama_path), dispatch=True)
    short, long = "The cat sat", "The dog ran through the park"
    with model.trace() as tracer:
        with tracer.invoke(short):
            cat = model.model.layers[0].output[:, -1, :].save()
        with tracer.invoke(long):
            model.model.layers[0].output[:, -1, :] = cat
            patched = model.lm_head.output.save()
    plain_cat = []
    _plain_logits(hf, gpt2_tokenizer, short, {hf.model.layers[0]: plain_cat.append})

    def write_cat(out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, -1] = plain_cat[0][:, -1]
        return out

    expected = _plain_logits(hf, gpt2_tokenizer, long, {hf.model.layers[0]: write_cat})
    assert torch.allclose(cat, plain_cat[0][:, -1], atol=1e-5)
    assert patched.shape == expected.shape
    assert torch.allclose(patched, expected, atol=1e-4)
    assert not torch.allclose(patched, _plain_logits(hf, gpt2_tokenizer, long), atol=1e-3)
