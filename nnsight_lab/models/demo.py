"""A short tour of the engine on the demo model: `python -m nnsight_lab.models.demo` (`make demo`).

Four things done with nnsight_lab on SmolLM2-135M (`demo_model()`): a prediction, an
activation patch, an edit at one generation step and a gradient. Each is done again on
a second copy of the model with plain transformers and torch hooks, no engine, and the
two must agree (the tour exits with status 1 if one does not). `tiny_net()` is the
walkthrough's two-layer network.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from .demo_model import demo_folder, demo_model

EIFFEL = "The Eiffel Tower is in the city of"
COLOSSEUM = "The Colosseum is in the city of"  # the same length in tokens: 9
SUBJECT = slice(1, 4)  # " E", "iffel", " Tower" / " Col", "osse", "um"
LAYER = 8


def tiny_net(input_size: int = 5, hidden: int = 10, output_size: int = 2) -> torch.nn.Sequential:
    """The walkthrough's network: `layer1` (Linear) then `layer2` (Linear)."""
    return torch.nn.Sequential(
        OrderedDict(
            [
                ("layer1", torch.nn.Linear(input_size, hidden)),
                ("layer2", torch.nn.Linear(hidden, output_size)),
            ]
        )
    ).requires_grad_(False)


def tour() -> int:
    """Run the four steps; returns the number of disagreements with plain transformers."""
    start = time.monotonic()
    llm = demo_model(dispatch=True)
    plain = AutoModelForCausalLM.from_pretrained(demo_folder(), attn_implementation="eager")
    plain.eval()
    print(
        f"SmolLM2-135M, {len(plain.model.layers)} layers: loaded in {time.monotonic() - start:.1f} s"
    )
    steps = (_prediction, _patch, _generation_edit, _gradient)
    failures = sum(not step(llm, plain) for step in steps)
    print(f"\n{len(steps) - failures} of {len(steps)} agree with plain transformers.")
    return failures


def _prediction(llm: Any, plain: Any) -> bool:
    _title(f"1. prediction: {EIFFEL!r} -> ?")
    with llm.trace(EIFFEL):
        logits = llm.lm_head.output.save()
    with torch.no_grad():
        expected = plain(**_ids(llm, EIFFEL)).logits
    _top(llm, logits)
    return _agree(logits, expected)


def _patch(llm: Any, plain: Any) -> bool:
    _title(f"2. activation patch: layer {LAYER}'s output at the subject, Eiffel -> Colosseum")
    with llm.trace() as tracer:
        with tracer.invoke(EIFFEL):
            subject = llm.model.layers[LAYER].output[:, SUBJECT]
        with tracer.invoke(COLOSSEUM):
            llm.model.layers[LAYER].output[:, SUBJECT] = subject
            logits = llm.lm_head.output.save()
    clean: dict[str, torch.Tensor] = {}
    _run(plain, LAYER, EIFFEL, llm, lambda out: clean.setdefault("h", out[:, SUBJECT].clone()))
    expected = _run(plain, LAYER, COLOSSEUM, llm, lambda out: out[:, SUBJECT].copy_(clean["h"]))
    print(f"{COLOSSEUM!r}, unpatched:", end=" ")
    _top(llm, _run(plain, LAYER, COLOSSEUM, llm, lambda out: None))
    print("patched:", end=" ")
    _top(llm, logits)
    return _agree(logits, expected)


def _generation_edit(llm: Any, plain: Any) -> bool:
    _title('3. generation: at step 0 only, make " Rome" the most likely next token')
    rome = llm.tokenizer(" Rome")["input_ids"][0]
    with llm.generate(EIFFEL, max_new_tokens=4, do_sample=False) as tracer:
        with tracer.iter[0]:
            llm.lm_head.output[:, -1, rome] = 100.0
        tokens = llm.generator.output.save()
    calls = [0]

    def force(module: Any, args: Any, out: torch.Tensor) -> None:
        if calls[0] == 0:  # the first model call makes the first new token
            out[:, -1, rome] = 100.0
        calls[0] += 1

    handle = plain.lm_head.register_forward_hook(force)
    try:
        expected = plain.generate(**_ids(llm, EIFFEL), max_new_tokens=4, do_sample=False)
    finally:
        handle.remove()
    print("edited:  ", repr(llm.tokenizer.decode(tokens[0])))
    unedited = plain.generate(**_ids(llm, EIFFEL), max_new_tokens=4, do_sample=False)
    print("unedited:", repr(llm.tokenizer.decode(unedited[0])))
    return _agree(tokens, expected)


def _gradient(llm: Any, plain: Any) -> bool:
    _title(f"4. gradient of the ' Paris' logit at layer {LAYER}'s output, per token")
    paris = llm.tokenizer(" Paris")["input_ids"][0]
    with llm.trace(EIFFEL):
        hidden = llm.model.layers[LAYER].output
        score = llm.lm_head.output[0, -1, paris]
        with score.backward():
            grad = hidden.grad.save()
    kept: dict[str, torch.Tensor] = {}
    logits = _run(plain, LAYER, EIFFEL, llm, lambda out: kept.setdefault("h", out), grad=True)
    (expected,) = torch.autograd.grad(logits[0, -1, paris], kept["h"])
    norms = grad[0].norm(dim=-1)
    tokens = llm.tokenizer.convert_ids_to_tokens(_ids(llm, EIFFEL)["input_ids"][0])
    for token, norm in zip(tokens, norms.tolist(), strict=True):
        print(f"  {token.replace('Ġ', ' '):>8} {norm:7.2f} " + "#" * round(norm * 4))
    return _agree(grad, expected)


def _run(plain: Any, layer: int, text: str, llm: Any, edit: Callable, grad: bool = False) -> Any:
    """Plain transformers' logits with a torch forward hook calling `edit` on a layer."""

    def hook(module: Any, args: Any, out: torch.Tensor) -> None:
        edit(out)  # in place, or only looking

    handle = plain.model.layers[layer].register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grad):
            return plain(**_ids(llm, text)).logits
    finally:
        handle.remove()


def _ids(llm: Any, text: str) -> dict[str, torch.Tensor]:
    return dict(llm.tokenizer(text, return_tensors="pt"))


def _top(llm: Any, logits: torch.Tensor) -> None:
    probs = logits[0, -1].softmax(-1)
    best = probs.topk(3)
    print(", ".join(f"{llm.tokenizer.decode(i)!r} {p:.2f}" for p, i in zip(*best, strict=True)))


def _agree(ours: torch.Tensor, plain: torch.Tensor) -> bool:
    ok = ours.shape == plain.shape and torch.allclose(ours.float(), plain.float(), atol=1e-4)
    print("  plain transformers agrees" if ok else "  DIFFERS from plain transformers")
    return ok


def _title(text: str) -> None:
    print(f"\n{text}")


if __name__ == "__main__":
    sys.exit(1 if tour() else 0)
