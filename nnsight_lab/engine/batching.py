"""An invoke's rows of a batched value, and writing them back.

Every invoke owns rows `[start, stop)` of the batch. A value (a tensor, or a
tuple / list / dict / ModelOutput of them) is cut to those rows for the invoke
to read (`narrow`, views: in-place edits reach the batch), and a value the
invoke assigns is put back into its rows only (`merge`). Tensors whose first
dimension is not the batch size (e.g. GPT-2's position ids `[1, seq]`) are
shared by all invokes and are not cut. `module.skip(value)` in some invokes
gives the module's output for their rows only (`RowSkips`).
"""

from __future__ import annotations

from collections.abc import Callable
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


class RowSkips:
    """What invokes that skip a module (`module.skip(value)`) give as its output, each
    for its own rows `[start, stop)` of a batch of `size`.

    When they cover every row, their values together are the output and the module
    does not run; otherwise it runs for the whole batch (one forward serves all
    invokes) and each skipping invoke's rows of its output are replaced.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.parts: list[tuple[int, int, Any]] = []

    def add(self, start: int, stop: int, value: Any) -> None:
        if isinstance(value, torch.Tensor) and (value.dim() == 0 or len(value) != stop - start):
            raise TracingError(
                f"`.skip(value)` in this invoke needs a value with its {stop - start} row(s) "
                f"(the module's output for this invoke), got shape {tuple(value.shape)}: read "
                "it in this invoke, e.g. `module.skip(earlier_module.output)`."
            )
        self.parts.append((start, stop, value))

    def output(self, run: Callable[[], Any]) -> Any:
        """The module's output: `run()`'s (the module's forward) with the skipped rows
        replaced, or the skipping invokes' values alone when they cover the batch."""
        parts = sorted(self.parts, key=lambda part: part[0])
        covered = 0
        for start, stop, _ in parts:
            covered = stop if start == covered else -1
        if covered == self.size:
            return _concat([value for _, _, value in parts])
        output = run()
        for start, stop, value in parts:
            output = merge(output, start, stop, self.size, value)
        return output


def skip_rows(
    skips: dict[str, Any], path: str, rows: tuple[int, int], size: int, value: Any
) -> None:
    """Record that one invoke (rows `rows` of `size`) skips the module at `path`."""
    skipped = skips.get(path)
    if skipped is None:
        skipped = skips[path] = RowSkips(size)
    if isinstance(skipped, RowSkips):
        skipped.add(*rows, value)
    else:  # an invoke of the whole batch skipped it too: its value, with these rows
        skips[path] = merge(skipped, *rows, size, value)


def _concat(values: list) -> Any:
    """One value from per-invoke values, in row order (tensors joined along the batch)."""
    first = values[0]
    if isinstance(first, torch.Tensor) and first.dim() > 0:
        return torch.cat([torch.as_tensor(v, device=first.device) for v in values])
    if isinstance(first, (tuple, list)):
        return _rebuild(first, [_concat(list(items)) for items in zip(*values, strict=True)])
    if isinstance(first, dict):
        return _rebuild_mapping(first, {k: _concat([v[k] for v in values]) for k in first})
    return first


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`value` with `fn` applied to every tensor in it (through tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return _rebuild(value, [map_tensors(v, fn) for v in value])
    if isinstance(value, dict):
        return _rebuild_mapping(value, {k: map_tensors(v, fn) for k, v in value.items()})
    return value


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
