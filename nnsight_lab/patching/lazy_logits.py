"""`LazyLogits`: a run's logits `[1, seq, vocab]`, computed only where they are read.

Projecting every position onto the vocabulary is most of a small model's work,
and a patching metric usually reads one position (`logits[0, -1, token]`). So a
sweep hands the metric this tensor: indexing it by position projects just those
positions (positions before the patch are the unpatched run's, already known);
any other use computes the whole tensor first and goes on with it. Every answer
is the real one; laziness only decides when it is computed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map


class LazyLogits(torch.Tensor):
    """Logits of one run, projected on demand.

    Args:
        hidden: `[1, seq, hidden]` the body's last hidden states.
        project: hidden states -> logits (the model's output embedding).
        known: logits `[1, vocab]` already projected, by position.
    """

    _hidden: torch.Tensor
    _project: nn.Linear
    _full: torch.Tensor | None
    _seq: int
    _rows: dict[int, torch.Tensor]  # projected positions, each computed once

    @staticmethod
    def __new__(
        cls, hidden: torch.Tensor, project: nn.Linear, known: dict[int, torch.Tensor] | None = None
    ) -> LazyLogits:
        shape = (1, hidden.shape[1], project.out_features)
        dtype = project.weight.dtype
        self = torch.Tensor._make_wrapper_subclass(cls, shape, dtype=dtype, device=hidden.device)
        self._hidden, self._project, self._full = hidden, project, None
        self._seq, self._rows = shape[1], dict(known or {})
        return self

    def __init__(self, *args: Any) -> None:
        pass

    def positions(self, index: int | slice) -> torch.Tensor:
        """`[1, n, vocab]` logits of the positions `index` selects."""
        wanted = range(self._seq)[index] if isinstance(index, slice) else [range(self._seq)[index]]
        if not wanted:
            return self.full()[:, :0]
        for position in wanted:
            if position not in self._rows:
                self._rows[position] = self._project(self._hidden[:, position])
        return torch.stack([self._rows[p] for p in wanted], dim=1)

    @property
    def read(self) -> list[int]:
        """The positions projected so far (those the metric read)."""
        return sorted(self._rows)

    def full(self) -> torch.Tensor:
        """The whole `[1, seq, vocab]` tensor (computed once)."""
        if self._full is None:
            self._full = self._project(self._hidden)
        return self._full

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        if func is torch.Tensor.__getitem__ and type(args[0]) is cls:
            found = _by_position(args[0], args[1])
            if found is not None:
                return found
        if func in _METADATA:  # shape, dtype, ...: known without computing anything
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))

        args, kwargs = tree_map(_real, (args, kwargs or {}))
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @classmethod
    def __torch_dispatch__(  # type: ignore[override]
        cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        # Whatever reaches the kernels without passing `__torch_function__` gets real data too.
        args, kwargs = tree_map(_real, (args, kwargs or {}))
        return func(*args, **kwargs)

    def __repr__(self, **kwargs: Any) -> str:  # type: ignore[override]
        return repr(self.full())


_METADATA = {
    torch.Tensor.shape.__get__,  # type: ignore[attr-defined]
    torch.Tensor.dtype.__get__,  # type: ignore[attr-defined]
    torch.Tensor.device.__get__,  # type: ignore[attr-defined]
    torch.Tensor.ndim.__get__,  # type: ignore[attr-defined]
    torch.Tensor.size,
    torch.Tensor.dim,
}


def _real(value: Any) -> Any:
    return value.full() if isinstance(value, LazyLogits) else value


def _by_position(logits: LazyLogits, index: Any) -> torch.Tensor | None:
    """`logits[index]` when `index` picks positions by int or slice, else None."""
    if not isinstance(index, tuple) or len(index) < 2:
        return None
    batch, position, rest = index[0], index[1], index[2:]
    simple = (int, slice)
    if not isinstance(position, simple) or isinstance(position, bool):
        return None
    if not isinstance(batch, simple) or not all(isinstance(i, simple) for i in rest):
        return None
    picked = logits.positions(position)  # [1, n, vocab]
    if isinstance(position, int):
        return picked[(batch, 0, *rest)]
    return picked[(batch, slice(None), *rest)]
