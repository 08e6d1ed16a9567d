"""An invoke's rows of a batched value, and writing them back.

Every invoke owns rows `[start, stop)` of the batch. A value (a tensor, or a
tuple / list / dict / ModelOutput of them) is cut to those rows for the invoke
to read (`narrow`, views: in-place edits reach the batch), and a value the
invoke assigns is put back into its rows only (`merge`). Tensors whose first
dimension is not the batch size (e.g. GPT-2's position ids `[1, seq]`) are
shared by all invokes and are not cut.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import TracingError


def narrow(value: Any, start: int, stop: int, size: int) -> Any:
    """Rows `[start, stop)` of every batched tensor in `value`."""
    if isinstance(value, torch.Tensor):
        if value.dim() > 0 and value.shape[0] == size:
            return value[start:stop]
        return value
    if isinstance(value, (tuple, list)):
        items = [narrow(v, start, stop, size) for v in value]
        return _rebuild(value, items)
    if isinstance(value, dict):
        return _rebuild_mapping(value, {k: narrow(v, start, stop, size) for k, v in value.items()})
    return value


def merge(full: Any, start: int, stop: int, size: int, new: Any) -> Any:
    """`full` with rows `[start, stop)` replaced by `new` (which has those rows only)."""
    if isinstance(full, torch.Tensor) and full.dim() > 0 and full.shape[0] == size:
        if not isinstance(new, torch.Tensor):
            new = torch.as_tensor(new, dtype=full.dtype, device=full.device)
        old = full[start:stop]
        if new is old or (new.shape == old.shape and _same_view(new, old)):
            return full
        if new.shape[1:] != full.shape[1:] or new.shape[0] != stop - start:
            raise TracingError(
                f"cannot put a value of shape {tuple(new.shape)} into this invoke's rows of a "
                f"batch of shape {tuple(full.shape)}: it must have shape "
                f"{(stop - start, *full.shape[1:])}"
            )
        return torch.cat([full[:start], new.to(full.dtype), full[stop:]])
    if isinstance(full, (tuple, list)) and isinstance(new, (tuple, list)) and len(full) == len(new):
        return _rebuild(
            full, [merge(f, start, stop, size, n) for f, n in zip(full, new, strict=True)]
        )
    if isinstance(full, dict) and isinstance(new, dict) and full.keys() == new.keys():
        return _rebuild_mapping(full, {k: merge(full[k], start, stop, size, new[k]) for k in full})
    return new


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.stride() == b.stride()


def _rebuild(original: tuple | list, items: list) -> Any:
    if isinstance(original, list):
        return items
    if type(original) is tuple:
        return tuple(items)
    return type(original)(*items)  # a namedtuple


def _rebuild_mapping(original: dict, items: dict) -> Any:
    if type(original) is dict:
        return items
    return type(original)(**items)  # transformers' ModelOutput and friends
