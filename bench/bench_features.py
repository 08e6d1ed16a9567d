"""Engine part two benchmark: generation, gradients, scan and `.source`, against nnsight.

Same method as `bench_core.py` (whose harness this reuses): round-robin in one
process, the time a trace adds over plain transformers doing the same work.

    generate8    generate 8 tokens, `tracer.iter[:]` saving the last block per step
                 (plain: `generate(max_new_tokens=8)`)
    backward     one `.grad` of the last block inside `with loss.backward():`
                 (plain: forward, logits.sum().backward() with a tensor hook)
    source_op    read `attn.source.attention_interface_0.output` of block 0
                 (plain: the forward)
    scan         `model.scan(prompt)` saving one shape; its whole time is shown in the
                 "plain us" column's place as "scan ms" (target: under 20 ms)

The scan runs on bench_core's GPT-2 (4 blocks, 128 wide). The other cases run on
a GPT-2 with the same blocks and vocabulary but 32 wide: what a trace adds is per
module call, per step and per trace, not per number, while the forward's noise on
this shared machine grows with its time (about 10% of it, mostly the vocabulary
projection): the 128-wide generate takes ~50 ms, give or take 5 ms, more than the
whole added time of either library.

    python bench/bench_features.py [--seconds S] [--quick] [--only CASE] [--system-malloc]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import warnings

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_core import (  # noqa: E402
    NARROW,
    PROMPT,
    SYSTEM_MALLOC,
    SYSTEM_MALLOC_HELP,
    Fixtures,
    added_us,
    gpt2_fixtures,
    measure,
    print_row,
    ratio,
    setup,
    short,
)

# nnsight 0.8.1 deprecates the `with tracer.iter[...]:` form that the example uses.
warnings.filterwarnings("ignore", message=".*block form is deprecated")


def case_generate8(nn, llm, prompt):
    with llm.generate(prompt, max_new_tokens=8) as tracer:
        hidden = nn.save(list())
        with tracer.iter[:]:
            hidden.append(llm.transformer.h[-1].output)
    return hidden


def case_backward(nn, llm, prompt):
    with llm.trace(prompt):
        hs = llm.transformer.h[-1].output
        hs.requires_grad_(True)
        loss = llm.lm_head.output.sum()
        with loss.backward():
            grad = hs.grad.save()
    return grad


def case_source_op(nn, llm, prompt):
    with llm.trace(prompt):
        out = llm.transformer.h[0].attn.source.attention_interface_0.output.save()
    return out


def case_scan(nn, llm, prompt):
    with llm.scan(prompt):
        shape = nn.save(llm.transformer.h[0].output.shape)
    return shape


CASES = {
    "generate8": case_generate8,
    "backward": case_backward,
    "source_op": case_source_op,
    "scan": case_scan,
}


def plain_closure(fixtures: Fixtures, case: str):
    gpt2, tok = fixtures.gpt2, fixtures.tokenizer

    def forward():
        return gpt2(**tok(PROMPT, return_tensors="pt"))

    def generate():
        return gpt2.generate(
            **tok(PROMPT, return_tensors="pt"), max_new_tokens=8, pad_token_id=tok.eos_token_id
        )

    def backward():
        out = gpt2(**tok(PROMPT, return_tensors="pt"), output_hidden_states=True)
        grads = []
        out.hidden_states[-2].register_hook(grads.append)
        out.logits.sum().backward()
        return grads

    return {"generate8": generate, "backward": backward}.get(case, forward)


def run_case(fixtures: Fixtures, libraries: dict, case: str, args) -> list[str]:
    closures: dict = {"plain": plain_closure(fixtures, case)}
    for name, nn in libraries.items():
        if isinstance(nn, str):
            closures[name] = "unavailable"
            continue
        llm = fixtures.wrapped(nn, "gpt2")
        closures[name] = lambda nn=nn, llm=llm: CASES[case](nn, llm, PROMPT)
    runnable = {k: v for k, v in closures.items() if not isinstance(v, str)}
    grad = contextlib.nullcontext() if case == "backward" else torch.no_grad()
    with grad:
        samples = {**closures, **measure(runnable, args.seconds, args.batch_s)}
    if case == "scan":
        cells = [_ms(samples[name]) for name in ("nnsight_lab", "nnsight")]
        return [case, "-", f"{cells[0]} ms total", f"{cells[1]} ms total", ratio(*cells)]
    plain = samples["plain"]
    lab, ref = (added_us(samples[name], plain) for name in ("nnsight_lab", "nnsight"))
    return [case, f"{statistics.median(plain) * 1e6:.1f}", lab, ref, ratio(lab, ref)]


def _ms(sample) -> str:
    return sample if isinstance(sample, str) else f"{statistics.median(sample) * 1e3:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40, help="timed seconds per case")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=list(CASES))
    parser.add_argument(SYSTEM_MALLOC, action="store_true", help=SYSTEM_MALLOC_HELP)
    args = parser.parse_args()
    args.batch_s = 0.002
    args.grad = True
    if args.quick:
        args.seconds = 0
    with setup(args) as (fixtures, libraries), gpt2_fixtures(NARROW) as narrow:
        for case in [args.only] if args.only else CASES:
            try:
                model = fixtures if case == "scan" else narrow
                print_row(run_case(model, libraries, case, args))
            except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
                print_row([case, short(exc), "-", "-", "-"])


if __name__ == "__main__":
    main()
