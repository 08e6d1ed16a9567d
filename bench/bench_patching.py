"""Activation patching benchmark: the batched helper against one trace per patch.

Sweeps 4 layers x 8 positions (32 patches) of the residual stream, on the tiny
random 4-layer GPT-2 of `bench_core` (with the real GPT-2 tokenizer), two ways:

    per_patch   one `model.trace(corrupted)` per (layer, position), as the nnsight
                tutorial writes it, after one clean trace
    helper      `nnsight_lab.patching.activation_patching` (patches as rows of one batch)

Both use nnsight_lab and are checked to agree before timing. The two run
round-robin; the table gives the median milliseconds of a whole sweep and the
speed-up (target: at least 5x). A second row does the same on a GPT-2-small-sized
random model (12 layers, 768 wide), where the forward pass itself dominates.

    python bench/bench_patching.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_core import save_gpt2  # noqa: E402

from nnsight_lab import LanguageModel  # noqa: E402
from nnsight_lab.patching import activation_patching  # noqa: E402

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
LAYERS, POSITIONS = [0, 1, 2, 3], list(range(4, 12))


def per_patch(llm: LanguageModel, metric) -> torch.Tensor:
    """The sweep as the nnsight tutorial writes it: one trace per patch (a GPT-2 block
    returns a tensor in transformers 5, a tuple before: the helper handles both)."""
    blocks = llm.transformer.h
    with llm.trace(CLEAN):
        clean = [blocks[layer].output for layer in LAYERS].save()
    result = torch.empty(len(LAYERS), len(POSITIONS))
    for i, layer in enumerate(LAYERS):
        for j, position in enumerate(POSITIONS):
            with llm.trace(CORRUPTED):
                blocks[layer].output[:, position] = clean[i][:, position]
                value = metric(llm.lm_head.output).save()
            result[i, j] = float(value)
    return result


def helper(llm: LanguageModel, metric) -> torch.Tensor:
    return activation_patching(
        llm, CLEAN, CORRUPTED, metric, layers=LAYERS, positions=POSITIONS, progress=False
    )


def measure(llm: LanguageModel, rounds: int) -> tuple[float, float]:
    mary, john = llm.tokenizer(" Mary")["input_ids"][0], llm.tokenizer(" John")["input_ids"][0]

    def metric(logits):
        return logits[0, -1, mary] - logits[0, -1, john]

    torch.testing.assert_close(per_patch(llm, metric), helper(llm, metric), rtol=1e-4, atol=1e-4)
    times: dict[str, list[float]] = {"per_patch": [], "helper": []}
    for index in range(rounds):
        order = [per_patch, helper] if index % 2 == 0 else [helper, per_patch]
        for sweep in order:
            start = time.perf_counter()
            sweep(llm, metric)
            times[sweep.__name__].append(time.perf_counter() - start)
    return statistics.median(times["per_patch"]), statistics.median(times["helper"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {args.rounds} rounds, 4 layers x 8 positions")
    print(f"{'model':<22}{'per_patch ms':>14}{'helper ms':>12}{'speed-up':>10}")
    with torch.no_grad(), tempfile.TemporaryDirectory() as folder:
        save_gpt2(folder)
        models = {"tiny gpt2 (4x128)": {}, "gpt2-small size": {"n_layer": 12, "n_embd": 768}}
        for name, overrides in models.items():
            if overrides:
                from transformers import GPT2Config, GPT2LMHeadModel

                GPT2LMHeadModel(GPT2Config(n_head=12, **overrides)).save_pretrained(folder)
            llm = LanguageModel(folder, dispatch=True)
            slow, fast = measure(llm, args.rounds if not overrides else max(3, args.rounds // 3))
            print(f"{name:<22}{slow * 1e3:>14.1f}{fast * 1e3:>12.1f}{slow / fast:>9.1f}x")


if __name__ == "__main__":
    main()
