"""LanguageModel against plain transformers, on tiny GPT-2 and Llama models saved to disk."""

from __future__ import annotations

import inspect
import warnings

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


# -- nnsight's other spellings of input, and 0.8 names ---------------------------------


def test_keyword_only_input_gives_the_same_logits(llm, hf_gpt2):
    tokens = llm.tokenizer(PROMPT, return_tensors="pt")
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    with llm.trace(input_ids=ids, attention_mask=mask):
        logits = llm.lm_head.output.save()
    with llm.trace() as tracer:
        with tracer.invoke(input_ids=ids):
            invoked = llm.lm_head.output.save()
    with llm.scan(input_ids=ids):
        shape = nnsight.save(llm.lm_head.output.shape)
    expected = _plain_logits(hf_gpt2, llm.tokenizer, PROMPT)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.allclose(invoked, expected, atol=1e-5)
    assert shape == expected.shape


def test_generate_with_keyword_input_and_tracer_result(llm, hf_gpt2):
    tokens = llm.tokenizer(PROMPT, return_tensors="pt")
    with llm.generate(**tokens, max_new_tokens=3) as tracer:
        inside = tracer.result.save()
    plain = hf_gpt2.generate(
        **tokens, max_new_tokens=3, do_sample=False, pad_token_id=llm.tokenizer.pad_token_id
    )
    assert torch.equal(inside, plain)
    assert torch.equal(tracer.result, plain)  # after the block: the value itself


def test_tracer_result_of_a_trace_is_the_model_output(llm, hf_gpt2, runner):
    with llm.trace(PROMPT) as tracer:
        out = tracer.result.save()
    assert type(out).__name__ == "CausalLMOutputWithCrossAttentions"
    assert torch.allclose(out.logits, _plain_logits(hf_gpt2, llm.tokenizer, PROMPT), atol=1e-5)
    assert tracer.result is out


def test_a_dict_without_input_ids_names_the_line_and_the_fix(llm):
    line = inspect.currentframe().f_lineno + 2
    with pytest.raises(nnsight.TracingError, match="must hold 'input_ids'") as raised:
        with llm.trace({"ids": [1, 2]}):
            llm.output.save()
    message = str(raised.value)
    assert f"{__file__}, line {line}" in message
    assert "input_ids=ids, attention_mask=mask" in message and "['ids']" in message


def test_token_ids_that_are_not_ints_name_the_invoke_line(llm):
    line = inspect.currentframe().f_lineno + 3
    with pytest.raises(nnsight.TracingError, match="rows of ints") as raised:
        with llm.trace() as tracer:
            with tracer.invoke(torch.tensor([[0.5, 1.5]])):
                llm.output.save()
    assert f"line {line}:" in str(raised.value)


def test_transformers_model_is_language_model_and_takes_its_task(tiny_gpt2_path, hf_gpt2):
    model = nnsight.TransformersModel(str(tiny_gpt2_path), task="text-generation")
    assert isinstance(model, LanguageModel)
    with model.trace(PROMPT):
        logits = model.lm_head.output.save()
    assert torch.allclose(logits, _plain_logits(hf_gpt2, model.tokenizer, PROMPT), atol=1e-5)
    with pytest.raises(ValueError, match="runs the tasks"):
        nnsight.TransformersModel(str(tiny_gpt2_path), task="image-classification")


def test_rename_and_envoys_are_not_passed_to_from_pretrained(tiny_gpt2_path, hf_gpt2):
    class Block(nnsight.Envoy):
        pass

    llm = LanguageModel(
        str(tiny_gpt2_path),
        rename={"transformer.h": "layers", "attn": "self_attn"},
        envoys={"h.*": Block},
    )
    with llm.trace(PROMPT):  # loads the weights: the aliases now name the real modules
        attn = llm.layers[1].self_attn.output[0].save()
        logits = llm.lm_head.output.save()
    assert not hasattr(llm._model.config, "rename") and not hasattr(llm._model.config, "envoys")
    assert llm.layers[0] is llm.transformer.h[0] and type(llm.layers[0]) is Block
    assert llm.layers[1].self_attn._module is llm._model.transformer.h[1].attn
    tokens = llm.tokenizer(PROMPT, return_tensors="pt")
    seen = {}
    hook = hf_gpt2.transformer.h[1].attn.register_forward_hook(lambda m, a, o: seen.update(o=o))
    try:
        with torch.no_grad():
            hf_gpt2(**tokens)
    finally:
        hook.remove()
    assert torch.allclose(attn, seen["o"][0], atol=1e-5)
    assert torch.allclose(logits, _plain_logits(hf_gpt2, llm.tokenizer, PROMPT), atol=1e-5)


# -- two silent wrong answers of transformers 5 models, made loud --------------------


def _block_outputs(model, layers, tokens):
    seen = []
    hooks = [b.register_forward_hook(lambda m, a, o: seen.append(o)) for b in layers]
    try:
        with torch.no_grad():
            model(**tokens)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_block_output_index_zero_warns_once_per_line_and_names_the_fix(llm, hf_gpt2, runner):
    tokens = llm.tokenizer(PROMPT, return_tensors="pt")
    fix = r"Write `model.transformer.h\[1\].output`"
    with pytest.warns(nnsight.OutputIndexWarning, match=fix) as record:
        with llm.trace(PROMPT):
            attn = llm.transformer.h[0].attn.output[0].save()  # a tuple: no warning
            row = llm.transformer.h[1].output[0].save()  # the seeds' transformers-4 habit
            logits = llm.lm_head.output[0].save()  # not a block: no warning
    hidden = _block_outputs(hf_gpt2, [hf_gpt2.transformer.h[1]], tokens)[0]
    assert torch.allclose(row, hidden[0], atol=1e-5)  # what it reads: batch row 0
    assert len(record) == 1  # the tuple and the logits, read with [0] too, do not warn
    assert attn.shape == hidden.shape and logits.shape == (10, 50257)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's usual rule: once per location
        line = inspect.currentframe().f_lineno + 3
        for _ in range(2):
            with llm.trace(PROMPT):
                llm.transformer.h[0].output[0][:] = 0  # a write through [0] too
    assert len(caught) == 1 and caught[0].category is nnsight.OutputIndexWarning
    assert caught[0].filename == __file__ and caught[0].lineno == line
    assert f"line {line} of {__file__}" in str(caught[0].message)


def test_llama_decoder_layers_warn_too(tiny_llama_path, runner):
    llm = LanguageModel(str(tiny_llama_path))
    with pytest.warns(nnsight.OutputIndexWarning, match=r"model.model.layers\[0\]"):
        with llm.trace() as tracer:
            with tracer.invoke(PROMPT):  # through an invoke's rows as well
                first = llm.model.layers[0].output[0].save()
    with llm.trace(PROMPT):
        whole = llm.model.layers[0].output.save()
    assert torch.equal(first, whole[0])


SEED = "The Eiffel Tower is in"


def _seed_attention(llm):
    """The guide's code for attention patterns (seed 000), on the tiny model's last layer."""
    with llm.trace(SEED):
        attn = llm.transformer.h[1].attn.attn_dropout.input[0][0].save()
    return attn


def test_attention_dropout_under_sdpa_says_why_and_names_the_fix(llm):
    assert llm._model.config._attn_implementation == "sdpa"  # transformers' default
    with pytest.raises(nnsight.NotReachedError, match="never reached") as raised:
        _seed_attention(llm)
    message = str(raised.value)
    assert "'sdpa', a fused kernel" in message
    assert 'attn_implementation="eager", reorder_and_upcast_attn=True' in message


def test_attention_dropout_under_plain_eager_says_why(tiny_gpt2_path):
    llm = LanguageModel(str(tiny_gpt2_path), attn_implementation="eager")
    with pytest.raises(nnsight.NotReachedError, match="upcast-and-reorder path") as raised:
        _seed_attention(llm)
    assert "attention_interface_0.output[1]" in str(raised.value)


def test_the_seeds_attention_code_works_when_loaded_as_the_hint_says(tiny_gpt2_path):
    llm = LanguageModel(
        str(tiny_gpt2_path), attn_implementation="eager", reorder_and_upcast_attn=True
    )
    pattern = _seed_attention(llm)
    plain = AutoModelForCausalLM.from_pretrained(tiny_gpt2_path, attn_implementation="eager")
    with torch.no_grad():
        out = plain.eval()(**llm.tokenizer(SEED, return_tensors="pt"), output_attentions=True)
    expected = out.attentions[1][0][0]  # batch row 0, head 0: [query, key]
    assert pattern.shape == expected.shape == (7, 7)
    assert torch.allclose(pattern, expected, atol=1e-6)


def test_an_edit_with_tracer_iter_applies_at_every_generation_step(llm, hf_gpt2):
    with llm.edit() as (tracer, edited):
        for _ in tracer.iter[:]:
            edited.transformer.h[0].output[:] = 0
    with edited.generate(PROMPT, max_new_tokens=3) as generation:
        cache = generation.cache(modules=[edited.transformer.h[0]])
        ids = generation.result.save()
    hook = hf_gpt2.transformer.h[0].register_forward_hook(lambda m, a, out: out * 0)
    try:
        tokens = llm.tokenizer(PROMPT, return_tensors="pt")
        pad = llm.tokenizer.pad_token_id
        plain = hf_gpt2.generate(**tokens, max_new_tokens=3, do_sample=False, pad_token_id=pad)
    finally:
        hook.remove()
    steps = cache["model.transformer.h.0"].output
    assert len(steps) == 3 and all(torch.count_nonzero(step) == 0 for step in steps)
    assert torch.equal(ids, plain)
    assert not llm._edits  # the original model stays unedited
