"""`activation_patching` against the same sweep done by hand with plain torch hooks."""

from __future__ import annotations

import pytest
import torch

from nnsight_lab.patching import activation_patching, find_blocks
from nnsight_lab.patching.corrupted import Corrupted

CLEAN = "The Eiffel Tower is in the city of"
CORRUPTED = "The Colosseum is in the city of"


def _reference(hf_model, clean_ids, corrupted_ids, metric, module_of, layers, positions):
    """Patch one (layer, position) at a time with forward hooks on the plain model."""
    stored = {}
    hooks = [
        module_of(layer).register_forward_hook(
            lambda m, i, o, layer=layer: stored.__setitem__(layer, _hidden(o).clone())
        )
        for layer in layers
    ]
    with torch.no_grad():
        hf_model(clean_ids)
    for hook in hooks:
        hook.remove()
    result = torch.empty(len(layers), len(positions))
    for i, layer in enumerate(layers):
        for j, position in enumerate(positions):

            def patch(m, inputs, output, layer=layer, position=position):
                _hidden(output)[:, position] = stored[layer][:, position]

            hook = module_of(layer).register_forward_hook(patch)
            with torch.no_grad():
                result[i, j] = float(metric(hf_model(corrupted_ids).logits))
            hook.remove()
    return result


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


@pytest.mark.parametrize("component", ["resid", "attn", "mlp"])
def test_sweep_equals_a_plain_per_patch_loop(llm, hf_gpt2, gpt2_tokenizer, component):
    clean = torch.tensor([gpt2_tokenizer(CLEAN)["input_ids"]])
    corrupted = torch.tensor([gpt2_tokenizer(CORRUPTED)["input_ids"]])
    assert clean.shape == corrupted.shape and not torch.equal(clean, corrupted)
    target = int(clean[0, -1])

    def metric(logits):
        return logits[0, -1].log_softmax(-1)[target]

    names = {"resid": None, "attn": "attn", "mlp": "mlp"}

    def module_of(layer):
        block = hf_gpt2.transformer.h[layer]
        return block if names[component] is None else getattr(block, names[component])

    layers, positions = [0, 1], list(range(clean.shape[1]))
    expected = _reference(hf_gpt2, clean, corrupted, metric, module_of, layers, positions)
    got = activation_patching(llm, CLEAN, CORRUPTED, metric, component=component, batch_size=5)
    assert got.shape == (2, clean.shape[1])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert got.abs().sum() > 0 and not torch.allclose(got, got[0, 0])  # patches differ


def test_chunking_does_not_change_the_result(llm):
    def metric(logits):
        return logits[0, -1, 7]

    one = activation_patching(llm, CLEAN, CORRUPTED, metric, layers=[1], positions=[0, 2, 4])
    many = activation_patching(
        llm, CLEAN, CORRUPTED, metric, layers=[1], positions=[0, 2, 4], batch_size=1, progress=False
    )
    torch.testing.assert_close(one, many)


def test_bad_arguments_name_the_fix(llm):
    with pytest.raises(ValueError, match="same number of tokens"):
        activation_patching(llm, CLEAN, "Paris", lambda logits: logits.sum())
    with pytest.raises(ValueError, match="component must be one of"):
        activation_patching(llm, CLEAN, CORRUPTED, lambda logits: logits.sum(), component="x")
    with pytest.raises(ValueError, match="layer 9 is out of range"):
        activation_patching(llm, CLEAN, CORRUPTED, lambda logits: logits.sum(), layers=[9])
    with pytest.raises(ValueError, match="must return a scalar"):
        activation_patching(llm, CLEAN, CORRUPTED, lambda logits: logits, layers=[0])


def test_finds_the_block_list(llm, tiny_llama_path):
    from nnsight_lab import LanguageModel

    assert find_blocks(llm)._path == "model.transformer.h"
    llama = LanguageModel(str(tiny_llama_path))
    assert find_blocks(llama)._path == "model.model.layers"


def test_llama_with_rotary_positions(tiny_llama_path, gpt2_tokenizer):
    from transformers import AutoModelForCausalLM

    from nnsight_lab import LanguageModel

    hf_llama = AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()
    llama = LanguageModel(str(tiny_llama_path), dispatch=True)
    assert Corrupted.of(llama, torch.tensor([[1, 2, 3]])).base is not None
    clean = torch.tensor([gpt2_tokenizer(CLEAN)["input_ids"]])
    corrupted = torch.tensor([gpt2_tokenizer(CORRUPTED)["input_ids"]])

    def metric(logits):
        return logits[0, -1].log_softmax(-1)[int(clean[0, -1])]

    expected = _reference(
        hf_llama, clean, corrupted, metric, lambda i: hf_llama.model.layers[i], [0, 1], [0, 3, 9]
    )
    got = activation_patching(llama, clean, corrupted, metric, positions=[0, 3, 9])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_without_a_key_value_cache_every_run_is_whole(llm, monkeypatch):
    """The full-sequence path (models with no cache to share) gives the same sweep."""

    def metric(logits):
        return logits[0, :, 5].sum()  # reads every position, also those before the patch

    shared = activation_patching(llm, CLEAN, CORRUPTED, metric, batch_size=3)
    monkeypatch.setattr(Corrupted, "of", classmethod(lambda cls, model, ids: cls(ids)))
    whole = activation_patching(llm, CLEAN, CORRUPTED, metric, batch_size=3)
    torch.testing.assert_close(shared, whole, rtol=1e-4, atol=1e-4)


def test_logits_changed_after_the_output_embedding_are_not_projected_lazily(
    tiny_gpt2_path, gpt2_tokenizer
):
    from transformers import GPT2LMHeadModel

    from nnsight_lab import LanguageModel

    class Scaled(GPT2LMHeadModel):  # like soft-capping: the logits are not lm_head's output
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2 + 1
            return out

    hf_model = Scaled.from_pretrained(tiny_gpt2_path).eval()
    model = LanguageModel(hf_model, tokenizer=gpt2_tokenizer)
    clean = torch.tensor([gpt2_tokenizer(CLEAN)["input_ids"]])
    corrupted = torch.tensor([gpt2_tokenizer(CORRUPTED)["input_ids"]])
    with torch.no_grad():
        run = Corrupted.of(model, corrupted)
    assert run.base is not None and run.project is None

    def metric(logits):
        return logits[0, -1, 11] - logits[0, -1, 12]

    expected = _reference(
        hf_model, clean, corrupted, metric, lambda i: hf_model.transformer.h[i], [1], [2, 6]
    )
    got = activation_patching(model, clean, corrupted, metric, layers=[1], positions=[2, 6])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_result_follows_the_order_asked(llm):
    def metric(logits):
        return logits[0, -1, 9]

    forward = activation_patching(llm, CLEAN, CORRUPTED, metric, layers=[0, 1], positions=[2, 5])
    reverse = activation_patching(llm, CLEAN, CORRUPTED, metric, layers=[1, 0], positions=[5, 2])
    torch.testing.assert_close(reverse, forward.flip(0).flip(1))
    with pytest.raises(ValueError, match="given twice"):
        activation_patching(llm, CLEAN, CORRUPTED, metric, layers=[1, -1])


def test_persistent_edits_apply_to_every_patched_run(llm):
    def metric(logits):
        return logits[0, :, 3].sum()  # every position, also those before the patch

    with llm.edit() as edited:
        llm.transformer.h[0].output[:] = llm.transformer.h[0].output * 0.5
    expected = torch.empty(1, 3)
    with torch.no_grad():
        with edited.trace(CLEAN):
            clean = edited.transformer.h[1].output.save()
        for j, position in enumerate([0, 4, 8]):
            with edited.trace(CORRUPTED):
                edited.transformer.h[1].output[:, position] = clean[:, position]
                logits = edited.lm_head.output.save()
            expected[0, j] = metric(logits)
    got = activation_patching(
        edited, CLEAN, CORRUPTED, metric, layers=[1], positions=[0, 4, 8], batch_size=1
    )
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_progress_line_on_request(llm, capsys):
    def metric(logits):
        return logits[0, -1, 7]

    activation_patching(llm, CLEAN, CORRUPTED, metric, layers=[0], batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "activation patching: 3/3" in err  # 10 positions in chunks of 4
    activation_patching(llm, CLEAN, CORRUPTED, metric, layers=[0], batch_size=4, progress=False)
    assert capsys.readouterr().err == ""
