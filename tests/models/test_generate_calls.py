"""`generate` called without a `with` block, beam search asked for by the generation
config, and `tracer.cache(non_blocking=...)`, against plain transformers."""

from __future__ import annotations

import torch

import nnsight_lab as nnsight

PROMPT = "The Eiffel Tower is in the city of"


def _plain(hf_gpt2, llm, **kwargs) -> torch.Tensor:
    ids = llm.tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        return hf_gpt2.generate(**ids, pad_token_id=llm.tokenizer.pad_token_id, **kwargs)


def test_generate_without_a_block_returns_the_ids(llm, hf_gpt2):
    ids = llm.generate(PROMPT, max_new_tokens=3, do_sample=False)
    assert isinstance(ids, torch.Tensor)
    assert torch.equal(ids, _plain(hf_gpt2, llm, max_new_tokens=3, do_sample=False))


def test_generate_without_a_block_keeps_the_persistent_edits(llm, hf_gpt2):
    with llm.edit() as edited:
        llm.transformer.wte.output = llm.transformer.wte.output * 0
    ids = edited.generate(PROMPT, max_new_tokens=3, do_sample=False)
    plain = _plain(hf_gpt2, llm, max_new_tokens=3, do_sample=False)
    assert ids.shape == plain.shape and not torch.equal(ids, plain)


def test_beams_from_the_generation_config_run_without_a_streamer(llm, hf_gpt2, monkeypatch):
    monkeypatch.setattr(llm._module.generation_config, "num_beams", 3)
    monkeypatch.setattr(hf_gpt2.generation_config, "num_beams", 3)
    with llm.generate(PROMPT, max_new_tokens=3, do_sample=False) as tracer:
        ids = nnsight.save(tracer.result)
    assert torch.equal(ids, _plain(hf_gpt2, llm, max_new_tokens=3, do_sample=False))


def test_a_non_blocking_cache_holds_the_same_values(llm):
    caches = []
    for non_blocking in (True, False):
        with llm.trace(PROMPT) as tracer:
            caches.append(tracer.cache(modules=[llm.transformer.h[0]], non_blocking=non_blocking))
        with llm.trace(PROMPT):
            plain = llm.transformer.h[0].output.save()
        assert torch.equal(caches[-1]["model.transformer.h.0"].output, plain)


def test_pipe_gives_the_pipelines_records(llm, hf_gpt2):
    plain = _plain(hf_gpt2, llm, max_new_tokens=3, do_sample=False)
    text = llm.tokenizer.decode(plain[0], skip_special_tokens=True)
    with llm.pipe(PROMPT, max_new_tokens=3, do_sample=False) as tracer:
        logits = nnsight.save(llm.lm_head.output)
        records = nnsight.save(tracer.result)
    assert records == [{"generated_text": text}]
    assert logits.shape[0] == 1
    assert llm.pipe(PROMPT, max_new_tokens=3, do_sample=False) == records


def test_pipe_gives_a_list_per_prompt_of_a_batch(llm, hf_gpt2):
    with llm.pipe(max_new_tokens=2, do_sample=False) as tracer:
        with tracer.invoke(PROMPT):
            pass
        with tracer.invoke("Hello world"):
            records = nnsight.save(tracer.result)
    alone = llm.pipe("Hello world", max_new_tokens=2, do_sample=False)
    assert len(records) == 2 and records[1] == alone
