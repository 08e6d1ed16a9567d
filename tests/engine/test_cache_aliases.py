"""A cache, and the envoys, read through the names of `rename=` (aliases), against plain
transformers."""

from __future__ import annotations

import pytest
import torch

from nnsight_lab import LanguageModel

PROMPT = "Hello world"


@pytest.fixture(scope="module")
def renamed(tiny_gpt2_path):
    rename = {"transformer": "model", "h.0": "first_layer", "1": "second_layer"}
    return LanguageModel(str(tiny_gpt2_path), dispatch=True, rename=rename)


def _block_outputs(hf_gpt2, tokenizer):
    seen = []
    hooks = [
        block.register_forward_hook(lambda m, a, out: seen.append(out))
        for block in hf_gpt2.transformer.h[:2]
    ]
    try:
        with torch.no_grad():
            hf_gpt2(**tokenizer(PROMPT, return_tensors="pt"))
    finally:
        for hook in hooks:
            hook.remove()
    return [out[0] if isinstance(out, tuple) else out for out in seen]


def test_a_numeric_alias_indexes_the_cache_by_its_name(renamed, hf_gpt2):
    first, second = _block_outputs(hf_gpt2, renamed.tokenizer)
    with torch.no_grad(), renamed.trace(PROMPT) as tracer:
        cache = tracer.cache()
    assert torch.allclose(cache.model.model.h["second_layer"].output, second, atol=1e-6)
    assert torch.allclose(cache.model.model.first_layer.output, first, atol=1e-6)
    assert torch.equal(cache.model.transformer.h[1].output, cache["model.transformer.h.1"].output)
    with pytest.raises(KeyError, match="no submodule or alias 'third_layer'"):
        cache.model.model.h["third_layer"]  # noqa: B018


def test_a_numeric_alias_indexes_the_envoy_by_its_name(renamed, hf_gpt2):
    _, second = _block_outputs(hf_gpt2, renamed.tokenizer)
    assert renamed.model.h["second_layer"] is renamed.model.h[1]
    with torch.no_grad(), renamed.trace(PROMPT):
        out = renamed.model.h["second_layer"].output.save()
    assert torch.allclose(out, second, atol=1e-6)
    with pytest.raises(KeyError, match="no submodule or alias 'third_layer'"):
        renamed.model.h["third_layer"]  # noqa: B018
