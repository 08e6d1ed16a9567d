"""LanguageModel against plain transformers, on tiny GPT-2 and Llama models saved to disk."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import nnsight_lab as nnsight
from nnsight_lab import LanguageModel

PROMPT = "The Eiffel Tower is in the city of"


def _plain_logits(model, tokenizer, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def test_loading_is_lazy_until_the_first_trace(tiny_gpt2_path):
    llm = LanguageModel(str(tiny_gpt2_path))
    assert not llm.dispatched
    assert llm._model.lm_head.weight.device.type == "meta"
    assert "GPT2LMHeadModel" in repr(llm)
    assert "(generator): Generator(\n    (streamer): Streamer()" in repr(llm)
    with llm.trace(PROMPT):
        logits = llm.lm_head.output.save()
    assert llm.dispatched and logits.device.type == "cpu"


def test_dispatch_and_device_map_auto(tiny_gpt2_path, hf_gpt2):
    llm = LanguageModel(str(tiny_gpt2_path), device_map="auto", dispatch=True)
    assert llm.dispatched
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_path)
    with llm.trace(PROMPT):
        hidden = llm.transformer.h[-1].output.save()
        logits = llm.lm_head.output.save()
    assert hidden.shape == (1, 10, 64)
    assert torch.allclose(logits, _plain_logits(hf_gpt2, tokenizer, PROMPT), atol=1e-5)
    assert llm.tokenizer("Paris")["input_ids"] == tokenizer("Paris")["input_ids"]


def test_model_output_keeps_the_transformers_type(llm):
    with llm.trace(PROMPT):
        block = llm.transformer.h[0].output.save()
        out = llm.output.save()
    assert type(out).__name__ == "CausalLMOutputWithCrossAttentions"
    assert isinstance(block, torch.Tensor)  # transformers 5 blocks return the tensor itself


@pytest.mark.parametrize(
    "make_input",
    [
        lambda tok: PROMPT,
        lambda tok: [PROMPT],
        lambda tok: tok(PROMPT)["input_ids"],
        lambda tok: torch.tensor([tok(PROMPT)["input_ids"]]),
        lambda tok: tok(PROMPT, return_tensors="pt"),
    ],
    ids=["str", "list-of-str", "token-ids", "tensor", "batch-encoding"],
)
def test_every_input_form_gives_the_same_logits(llm, hf_gpt2, make_input):
    with llm.trace(make_input(llm.tokenizer)):
        logits = llm.lm_head.output.save()
    assert torch.allclose(logits, _plain_logits(hf_gpt2, llm.tokenizer, PROMPT), atol=1e-5)


def test_padded_invokes_each_match_running_alone(llm, hf_gpt2):
    prompts = ["The Eiffel Tower is in", "Big Ben is in", "Hello"]
    with llm.trace() as tracer:
        saved = nnsight.save([])
        for prompt in prompts:
            with tracer.invoke(prompt):
                saved.append(llm.lm_head.output[:, -1])
    for prompt, last in zip(prompts, saved, strict=True):
        expected = _plain_logits(hf_gpt2, llm.tokenizer, prompt)[:, -1]
        assert torch.allclose(last, expected, atol=1e-4), prompt


def test_cross_prompt_patching_with_a_barrier(llm, hf_gpt2):
    clean, other = "The cat sat on the", "The dog ran through the"  # both 5 tokens
    with llm.trace() as tracer:
        barrier = tracer.barrier(2)
        with tracer.invoke(clean):
            embeddings = llm.transformer.wte.output
            barrier()
        with tracer.invoke(other):
            barrier()
            llm.transformer.wte.output = embeddings
            patched = llm.lm_head.output[:, -1].save()
    expected = _plain_logits(hf_gpt2, llm.tokenizer, clean)[:, -1]
    assert torch.allclose(patched, expected, atol=1e-5)


def test_cross_prompt_patching_of_a_block_without_barrier(llm, hf_gpt2):
    with llm.trace() as tracer:
        with tracer.invoke("The cat sat on the"):
            cat_hidden = llm.transformer.h[1].output.save()
        with tracer.invoke("The dog ran through the"):
            llm.transformer.h[1].output[:] = cat_hidden
            dog = llm.output.save()
    expected = _plain_logits(hf_gpt2, llm.tokenizer, "The cat sat on the")
    assert torch.allclose(dog.logits, expected, atol=1e-5)


def test_model_instance_with_tokenizer(hf_gpt2, gpt2_tokenizer):
    llm = LanguageModel(hf_gpt2, tokenizer=gpt2_tokenizer)
    assert llm._model is hf_gpt2 and llm.dispatched
    with llm.trace(PROMPT):
        logits = llm.lm_head.output.save()
    assert torch.allclose(logits, _plain_logits(hf_gpt2, gpt2_tokenizer, PROMPT), atol=1e-5)


def test_llama_layers_path(tiny_llama_path):
    llm = LanguageModel(str(tiny_llama_path))
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()
    with llm.trace(PROMPT):
        layer0 = llm.model.layers[0].output.save()
        llm.model.layers[1].mlp.output[:] = 0
        logits = llm.lm_head.output.save()
    tokens = llm.tokenizer(PROMPT, return_tensors="pt")
    seen = {}
    handle = plain.model.layers[0].register_forward_hook(lambda m, i, o: seen.update(out=o))
    edit = plain.model.layers[1].mlp.register_forward_hook(lambda m, i, o: o * 0)
    with torch.no_grad():
        expected = plain(**tokens).logits
    handle.remove()
    edit.remove()
    layer0_ref = seen["out"][0] if isinstance(seen["out"], tuple) else seen["out"]
    assert torch.allclose(layer0, layer0_ref, atol=1e-5)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_bad_input_is_a_clear_error(llm):
    with pytest.raises(nnsight.TracingError, match="cannot take a dict_keys"):
        with llm.trace({}.keys()):
            llm.output.save()
