"""`activation_patching`: how much of a behaviour one activation carries.

The clean prompt runs once, keeping each site's activation; then the corrupted
prompt runs with one (layer, position) activation replaced by the clean one, for
every pair, and `metric(logits)` is measured on each patched run. The patched runs
are rows of a batch: each chunk of patches is one trace, one forward pass, whose
body patches every row at its own layer and position. What the runs can share
(the unpatched prefix, the projection onto the vocabulary) is in `corrupted`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..engine.envoy import Envoy
from ..models.nnsight import NNsight
from ..tracing import save
from .corrupted import Corrupted
from .lazy_logits import LazyLogits

Metric = Callable[[torch.Tensor], Any]

COMPONENTS = {
    "resid": (),  # the block's output: the residual stream after the block
    "attn": ("attn", "self_attn", "attention", "self_attention"),
    "mlp": ("mlp", "feed_forward", "ffn"),
}
_BLOCK_LISTS = ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers")


def activation_patching(
    model: NNsight,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    component: str = "resid",
    *,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Patch clean activations into the corrupted run, one (layer, position) at a time.

    Args:
        model: a wrapped language model (`LanguageModel`, or `NNsight` of a model
            taking token ids).
        clean, corrupted: the two prompts (strings or token ids), of equal token length.
        metric: gets the logits of one patched run, `[1, seq, vocab]`, and returns a scalar.
        layers: block indices to patch (default: all).
        positions: token positions to patch (default: all).
        component: `"resid"` (the block's output), `"attn"` or `"mlp"` (that sublayer's
            output inside the block).
        batch_size: patched runs per forward pass (default: as many as fit in ~1 GiB
            of activations and logits).
        progress: show a progress line (default: once a sweep has run for a second).

    Returns:
        `[len(layers), len(positions)]`: `metric` of each patched run.

    Raises:
        ValueError: unknown component, prompts of different lengths, indices out of range.

    Example:
        >>> def logit_diff(logits):
        ...     return logits[0, -1, paris] - logits[0, -1, rome]
        >>> result = activation_patching(llm, clean, corrupted, logit_diff, layers=range(4))
    """
    blocks = find_blocks(model)
    clean_ids, corrupted_ids = _token_ids(model, clean), _token_ids(model, corrupted)
    if clean_ids.shape != corrupted_ids.shape:
        raise ValueError(
            f"clean and corrupted prompts must have the same number of tokens to patch position "
            f"by position; got {clean_ids.shape[-1]} and {corrupted_ids.shape[-1]}. Pad or "
            "reword one of them."
        )
    wanted = _indices(layers, len(blocks), "layer")
    layers = sorted(wanted)  # forward order; the result comes back in the order asked
    positions = _indices(positions, clean_ids.shape[-1], "position")
    sites = [_site(blocks[layer], component) for layer in layers]
    size = batch_size or _fitting_batch(model, clean_ids.shape[-1], len(blocks))
    with torch.no_grad():
        clean_values = _clean_activations(model, clean_ids, sites)
        corrupted_run = Corrupted.of(model, corrupted_ids)
        chunks = _chunks(len(layers), positions, size, by_position=corrupted_run.base is not None)
        began, shown, values, hidden = time.perf_counter(), False, [], []
        for done, chunk in enumerate(chunks, start=1):
            rows = [(i, positions[j]) for i, j in chunk]
            output = _patched_runs(model, corrupted_run, sites, clean_values, rows)
            if corrupted_run.project is None:  # logits: measured now, not kept
                values += [_scalar(metric(output[r : r + 1])) for r in range(len(rows))]
            else:  # hidden states: measured at the end, projected together
                hidden.append(output)
            if progress or (progress is None and time.perf_counter() - began > 1.0):
                print(f"\ractivation patching: {done}/{len(chunks)}", end="", file=sys.stderr)
                shown = True
        if shown:
            print(file=sys.stderr)
        if corrupted_run.project is not None:
            values = _lazy_metrics(torch.cat(hidden), corrupted_run.project, metric, size)
    result = torch.empty(len(layers), len(positions))
    for (i, j), value in zip([pair for chunk in chunks for pair in chunk], values, strict=True):
        result[i, j] = value
    return result[[layers.index(layer) for layer in wanted]]


def _chunks(
    layers: int, positions: list[int], size: int, *, by_position: bool
) -> list[list[tuple[int, int]]]:
    """(layer index, position index) pairs in chunks of at most `size`, layers in forward
    order within a chunk. With shared prefixes the pairs go position by position, so a
    chunk's runs start at its first position (runs patched later repeat a few tokens)."""
    if not by_position:
        pairs = [(i, j) for i in range(layers) for j in range(len(positions))]
        chunks = [pairs[start : start + size] for start in range(0, len(pairs), size)]
    else:
        by_start = sorted(range(len(positions)), key=positions.__getitem__)
        pairs = [(i, j) for j in by_start for i in range(layers)]
        chunks = [pairs[start : start + size] for start in range(0, len(pairs), size)]
    return [sorted(chunk) for chunk in chunks]


def find_blocks(model: Envoy) -> Envoy:
    """The model's list of transformer blocks (`transformer.h`, `model.layers`, ...).

    Raises:
        ValueError: no block list is found.
    """
    for path in _BLOCK_LISTS:
        envoy: Any = model
        for name in path.split("."):
            envoy = envoy._children.get(name) if isinstance(envoy, Envoy) else None
        if isinstance(envoy, Envoy) and isinstance(envoy._module, nn.ModuleList):
            return envoy
    lists = [e for e in model.modules() if isinstance(e._module, nn.ModuleList) and len(e)]
    if not lists:
        raise ValueError(
            f"no list of blocks found in {type(model._module).__name__}: activation patching "
            "needs the model's layers as a torch.nn.ModuleList."
        )
    return max(lists, key=lambda e: sum(p.numel() for p in e._module.parameters()))


def _site(block: Envoy, component: str) -> Envoy:
    """The envoy whose output is patched: the block, or its attention / MLP."""
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {sorted(COMPONENTS)}, got {component!r}")
    if component == "resid":
        return block
    for name in COMPONENTS[component]:
        if name in block._children:
            return block._children[name]
    raise ValueError(
        f"{block._path} ({type(block._module).__name__}) has no {component} submodule named "
        f"{' or '.join(COMPONENTS[component])}; its children are {list(block._children)}."
    )


def _clean_activations(model: NNsight, ids: torch.Tensor, sites: list[Envoy]) -> list:
    """The clean run's activation at each site (the sites in forward order)."""
    with model.trace(ids) as tracer:
        values = [_hidden(site.output).clone() for site in sites]
        save(values)
        tracer.stop()  # nothing after the last site is needed
    return values


def _patched_runs(
    model: NNsight,
    corrupted: Corrupted,
    sites: list[Envoy],
    clean: list[torch.Tensor],
    rows: list[tuple[int, int]],
) -> torch.Tensor:
    """One forward pass of `len(rows)` patched runs; row r is patched at `rows[r]` =
    (site index, position); the runs start at the chunk's first patched position where
    the corrupted prefix is shared. Returns their logits `[rows, seq, vocab]`, or, where the
    logits are projected lazily, the body's last hidden states `[rows, seq, hidden]`."""
    ids, kwargs, cut, known = corrupted.batch(min(p for _, p in rows), len(rows))
    by_site: dict[int, list[tuple[int, int]]] = {}
    for row, (site, position) in enumerate(rows):
        by_site.setdefault(site, []).append((row, position))
    base = corrupted.base if corrupted.project is not None else None
    with model.trace(ids, **kwargs) as tracer:
        for site in sorted(by_site):  # sites are in forward order
            hidden = _hidden(sites[site].output)
            for row, position in by_site[site]:
                hidden[row, position - cut] = clean[site][0, position]
        if base is not None:
            final = save(_hidden(base.output))
            tracer.stop()  # the model's own projection of every position is not needed
        else:
            final = save(_logits(model.output))
    if known is not None:
        final = torch.cat([known.expand(len(rows), -1, -1), final], dim=1)
    return final


def _lazy_metrics(
    outputs: torch.Tensor, project: nn.Linear, metric: Metric, size: int
) -> list[float]:
    """`metric` of each run's logits, projected from its hidden states `outputs[r]` where
    read: the positions the first run's metric reads are projected for the other runs
    `size` at a time (one matrix product each)."""
    first = LazyLogits(outputs[:1], project)
    values = [_scalar(metric(first))]
    read = first.read
    for start in range(1, outputs.shape[0], size):
        hidden = outputs[start : start + size]
        batch = project(hidden[:, read])  # [n, len(read), vocab]
        for row in range(hidden.shape[0]):
            known = {p: batch[row : row + 1, i] for i, p in enumerate(read)}
            logits = LazyLogits(hidden[row : row + 1], project, known)
            values.append(_scalar(metric(logits)))
    return values


def _hidden(output: Any) -> torch.Tensor:
    """The hidden states in a module's output (a tensor, or the first item of a tuple or
    of a transformers `ModelOutput`)."""
    return output if isinstance(output, torch.Tensor) else output[0]


def _logits(output: Any) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else _hidden(output)


def _scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric must return a scalar, got a tensor of shape {value.shape}")
        return float(value.item())
    return float(value)


def _token_ids(model: NNsight, prompt: Any) -> torch.Tensor:
    """The prompt as a `[1, seq]` tensor of token ids."""
    if isinstance(prompt, str):
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise TypeError("string prompts need a model with a tokenizer (a LanguageModel)")
        return torch.tensor([tokenizer(prompt)["input_ids"]])
    ids = torch.as_tensor(prompt)
    return ids.unsqueeze(0) if ids.dim() == 1 else ids


def _indices(indices: Sequence[int] | None, count: int, name: str) -> list[int]:
    if indices is None:
        return list(range(count))
    result = [int(i) for i in indices]
    for i in result:
        if not -count <= i < count:
            raise ValueError(f"{name} {i} is out of range: there are {count}")
    result = [i % count for i in result]
    if len(set(result)) < len(result):
        raise ValueError(f"a {name} is given twice in {list(indices)}: give each once")
    return result


def _fitting_batch(model: NNsight, seq: int, blocks: int, budget: int = 1 << 30) -> int:
    """How many patched runs fit in `budget` bytes of activations and logits."""
    config = getattr(model._module, "config", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 1024
    vocab = getattr(config, "vocab_size", None) or 50_000
    per_row = seq * (vocab + 4 * hidden * blocks) * 4
    return max(1, min(256, budget // per_row))
