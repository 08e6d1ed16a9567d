"""`Corrupted`: the corrupted prompt, and the input of a batch of its patched runs.

A patch at position p changes nothing before p (the models are causal). Where the
model keeps a key/value cache, a batch of runs patched at p starts at p, from the
cache of the unpatched prefix, and the logits before p are the unpatched run's.
Where its logits are its output embedding applied to its body's last hidden states
(checked once on the unpatched run), the runs keep those hidden states, and the
metric gets `LazyLogits` that project only the positions it reads.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..engine.envoy import Envoy
from ..models.nnsight import NNsight


@dataclass
class Corrupted:
    """The corrupted prompt and what its patched runs can share.

    Attributes:
        ids: `[1, seq]` token ids.
        base: the envoy of the model's body (None: no key/value cache to share).
        project: hidden states -> logits, when that is all the model's head does.
        known: of the unpatched run, `[1, seq, hidden]` last hidden states of the body
            (with `project`) or else `[1, seq, vocab]` logits (with `base` only).
        cache: the unpatched run's key/value cache (with `base` only).
    """

    ids: torch.Tensor
    base: Envoy | None = None
    project: nn.Linear | None = None
    known: torch.Tensor | None = None
    cache: Any = None

    @classmethod
    def of(cls, model: NNsight, ids: torch.Tensor) -> Corrupted:
        """Look at the model once to learn what its patched runs can share."""
        module = model._module
        base = getattr(module, "base_model", None)
        envoy = next((e for e in model.modules() if e._module is base), None)
        if not isinstance(base, nn.Module) or base is module or envoy is None or model._edits:
            return cls(ids)  # (the plain runs below would not apply persistent edits)
        ids = ids.to(next(module.parameters()).device)
        if "use_cache" not in inspect.signature(base.forward).parameters:
            return cls(ids)
        out = base(ids, use_cache=True)
        cache = getattr(out, "past_key_values", None)
        if not all(hasattr(cache, name) for name in ("crop", "batch_repeat_interleave")):
            return cls(ids)  # e.g. a state-space model: no key/value cache to share
        project = _projection(module, ids, out[0])
        known = out[0] if project else module(ids).logits
        return cls(ids, envoy, project, known, cache)

    def batch(self, position: int, rows: int) -> tuple[torch.Tensor, dict, int, Any]:
        """Input of `rows` runs to be patched at `position`: token ids, forward keyword
        arguments, how many leading tokens the ids leave out, and what is `known` of them."""
        kwargs: dict[str, Any] = {}
        if self.base is None or self.known is None or position == 0:
            return self.ids.repeat(rows, 1), kwargs, 0, None
        device, seq = self.known.device, self.ids.shape[-1]
        past = copy.deepcopy(self.cache)
        past.crop(position - seq)  # negative: drop that many tokens from the end
        past.batch_repeat_interleave(rows)
        kwargs.update(
            past_key_values=past,
            attention_mask=torch.ones(rows, seq, dtype=torch.long, device=device),
            position_ids=torch.arange(position, seq, device=device).expand(rows, -1),
        )
        return self.ids[:, position:].repeat(rows, 1), kwargs, position, self.known[:, :position]


def _projection(module: nn.Module, ids: torch.Tensor, hidden: torch.Tensor) -> nn.Linear | None:
    """The output embedding, if the model's logits are it applied to the body's last
    hidden states and nothing else (no soft-capping or scaling after it): checked on
    the last position, watching what the embedding gets and gives in one more run."""
    get = getattr(module, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Linear):
        return None
    seen: list = []
    hook = head.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    try:
        keep = "logits_to_keep" in inspect.signature(module.forward).parameters
        logits = module(ids, **({"logits_to_keep": 1} if keep else {})).logits[:, -1]
    finally:
        hook.remove()
    if len(seen) != 1:
        return None
    given, made = seen[0][0][:, -1], seen[0][1][:, -1]
    return head if torch.equal(given, hidden[:, -1]) and torch.equal(made, logits) else None
