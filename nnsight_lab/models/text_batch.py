"""A transformers model's inputs, split into rows per invoke and padded into one batch.

Mental model: every invoke's input (text, token ids, an encoding, keywords) becomes
rows of named *fields* (`input_ids`, `attention_mask`, `labels`, ...). The batch
pads each field to the widest row with its own value, on the side its kind asks:

    kind       fields                                           padded
    sequence   input_ids, inputs_embeds, attention_mask,        on the tokenizer's side,
               token_type_ids, position_ids, ...                to the input's width
    decoder    decoder_input_ids, decoder_attention_mask, ...   on the right, own width
    example    start_positions, end_positions, ...              not at all (one per row)
    labels     per token (the input's width): as a sequence field; a target of its own
               width (seq2seq, one column): on the right; a class label: one per row

An invoke that leaves a field out gets its default (segment 0, an ignored label,
positions counted from its first token); a field with no default (a decoder input)
must be in every invoke or in none. Position ids are derived row by row from the
mask where a row is padding and then tokens (left padding), so each row gives the
result it would give alone. A tensor outside the table is not known to be per row:
such an input is handed to the model whole, and cannot be batched with another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from ..errors import TracingError, TracingValueError

SEQUENCE = {  # field: padding value
    "input_ids": None,  # the pad token
    "inputs_embeds": 0.0,
    "attention_mask": 0,
    "global_attention_mask": 0,
    "token_type_ids": 0,
    "position_ids": 0,
    "special_tokens_mask": 1,
}
DECODER = {
    "decoder_input_ids": None,
    "decoder_inputs_embeds": 0.0,
    "decoder_attention_mask": 0,
    "decoder_position_ids": 0,
}
EXAMPLE = ("start_positions", "end_positions", "next_sentence_label")
FIELDS = frozenset((*SEQUENCE, *DECODER, *EXAMPLE, "labels"))
SHARED = ("token_type_ids", "position_ids")  # one row of these stands for every row
_DEFAULTS = {"attention_mask": 1, "token_type_ids": 0, "special_tokens_mask": 0}


@dataclass
class Rows:
    """One invoke's input: per field, one tensor per row (unpadded).

    Attributes:
        fields: per field, a tensor per row (`[seq]`, `[seq, hidden]` for embeds,
            `[choices, seq]` for multiple choice; `[]` for one label per row).
        count: how many rows.
        labels: how the labels are laid out: "token", "own" (own width) or "class".
        forward: other keywords, passed to the forward as they are.
        opaque: the input holds tensors not known to be per row: it goes whole.
        masked: give it an all-ones mask if it has none (not beside a key-value cache).
    """

    fields: dict[str, list[torch.Tensor]]
    count: int
    labels: str | None = None
    forward: dict[str, Any] = field(default_factory=dict)
    opaque: bool = False
    masked: bool = True  # give it a mask when it has none (not beside a key-value cache)


def rows_of(
    values: dict[str, Any], forward: dict[str, Any], encoder_decoder: bool, masked: bool = True
) -> Rows:
    """The rows of one invoke, from its fields (`input_ids` or `inputs_embeds` among them)."""
    main = "input_ids" if values.get("input_ids") is not None else "inputs_embeds"
    if values.get(main) is None:
        raise TracingError("a LanguageModel input needs `input_ids` or `inputs_embeds`")
    lone = 2 if main == "inputs_embeds" else 1  # the dims of one unbatched row
    ids = _rows(values[main], lone, main)
    if main == "input_ids" and any(r.is_floating_point() or r.numel() == 0 for r in ids):
        raise TracingError(
            "token ids must be rows of ints (a list, a list of lists, or an integer tensor), "
            f"got a row {ids[0].tolist()[:4]!r}"
        )
    width = ids[0].shape[-1] if main == "input_ids" else ids[0].shape[0]
    fields: dict[str, list[torch.Tensor]] = {main: ids}
    unbatched = _dims(values[main]) <= lone
    labels = None
    for name, value in values.items():
        if name == main or value is None:
            continue
        if name == "labels":
            fields[name], labels = _labels(value, ids, width, unbatched, encoder_decoder)
            continue
        got = _rows(value, 1 if name in SEQUENCE or name in DECODER else 0, name, unbatched)
        if name in SHARED and len(got) == 1 and len(ids) > 1:
            got = got * len(ids)
        _check_rows(name, got, ids, main)
        if name in SEQUENCE:
            for row, of in zip(got, ids, strict=True):
                own = of.shape[-1] if main == "input_ids" else of.shape[0]
                wider = name == "attention_mask" and row.shape[-1] > own  # past tokens too
                if row.shape[-1] != own and not wider:
                    raise TracingValueError(
                        f"`{name}` has {row.shape[-1]} positions for a row of {own}: give "
                        f"it one value per token of `{main}`"
                    )
        fields[name] = got
    opaque = any(isinstance(v, torch.Tensor) for v in forward.values())
    return Rows(fields, len(ids), labels, forward, opaque, masked)


def count_rows(value: Any) -> int:
    """How many rows token ids (in any of their forms) make."""
    return len(_rows(value, 1, "input_ids"))


def batch_rows(
    invokes: list[Rows], pad_token: int | None, left: bool, takes_positions: Callable[[], bool]
) -> dict[str, Any]:
    """The invokes' rows as one batch of keyword arguments for the forward
    (`takes_positions()`: whether the forward takes `position_ids`, asked only when a
    row needs them)."""
    if len(invokes) == 1:
        lone = _unpadded(invokes[0])
        if lone is not None:
            return lone
    if len(invokes) > 1 and any(rows.opaque for rows in invokes):
        raise NotImplementedError(
            "Can't batch these inputs; pass text or token ids. (An input with a tensor "
            "keyword outside the known fields goes to the model whole, in a lone invoke.)"
        )
    total = sum(rows.count for rows in invokes)
    main = "input_ids" if "input_ids" in invokes[0].fields else "inputs_embeds"
    if any(main not in rows.fields for rows in invokes):
        raise TracingValueError(
            "invokes of one trace are run as one batch, so they must all give `input_ids` "
            "or all `inputs_embeds`, not some of each"
        )
    seq_dim = -1 if main == "input_ids" else 0
    width = max(row.shape[seq_dim] for rows in invokes for row in rows.fields[main])
    names = list(set().union(*(rows.fields for rows in invokes)) & FIELDS)
    if all(rows.masked for rows in invokes) and "attention_mask" not in names:
        names.append("attention_mask")
    batch: dict[str, Any] = {}
    for name in sorted(names, key=_order):
        if name == "position_ids":
            continue
        if name == "labels":
            batch[name] = _batch_labels(invokes, width, left)
        elif name in SEQUENCE:
            pad = pad_token if SEQUENCE[name] is None else SEQUENCE[name]
            rows = _with_defaults(invokes, name, main)
            batch[name] = _pad(rows, width, pad, left, name, seq_dim if name == main else -1)
        elif name in DECODER:
            rows = _required(invokes, name, total)
            pad = pad_token if DECODER[name] is None else DECODER[name]
            dim = 0 if name.endswith("embeds") else -1
            own = max(r.shape[dim] for r in rows)
            batch[name] = _pad(rows, own, pad, False, name, dim)
        else:  # one per example
            rows = _required(invokes, name, total)
            batch[name] = torch.stack([r.to(rows[0].device) for r in rows])
    positions = _positions(invokes, batch.get("attention_mask"), width, left, takes_positions)
    if positions is not None:
        batch["position_ids"] = positions
    for invoke in invokes:
        for name, value in invoke.forward.items():
            if name in batch and not _same(batch[name], value):
                raise TracingValueError(
                    f"invokes of one trace are run as one batch, so their `{name}` must be "
                    f"equal; got {batch[name]!r} and {value!r}"
                )
            batch[name] = value
    return batch


def _unpadded(rows: Rows) -> dict[str, Any] | None:
    """The batch of one invoke of token rows of one width with a mask of ones, or none
    (a prompt, or prompts of one length: the usual trace), made without padding anything:
    what `batch_rows` gives for it, in a few tensor operations. None for any other input."""
    fields = rows.fields
    ids, mask = fields.get("input_ids"), fields.get("attention_mask")
    if ids is None or len(fields) != 1 + (mask is not None):
        return None
    width = ids[0].shape[-1]
    if any(r.shape[-1] != width for r in ids):
        return None
    stacked_ids = torch.stack(ids)  # [batch, seq], or [batch, choices, seq]
    batch: dict[str, Any] = {"input_ids": stacked_ids}
    if mask is not None:
        if any(m.shape[-1] != width or m.device != ids[0].device for m in mask):
            return None  # a mask over past tokens too, or on another device
        stacked = torch.stack(mask)
        if not bool(stacked.all()):
            return None  # padding: positions may be derived (`_positions`)
        batch["attention_mask"] = stacked
    elif rows.masked:
        batch["attention_mask"] = torch.ones(stacked_ids.shape, dtype=torch.long)
    batch.update(rows.forward)
    return batch


def _order(name: str) -> int:
    return 0 if name in ("input_ids", "inputs_embeds") else 1


def _rows(value: Any, lone: int, name: str, unbatched: bool = False) -> list[torch.Tensor]:
    """`value` as a list of row tensors; `lone`: the dims of one row (0: a scalar per row)."""
    if isinstance(value, (list, tuple)) and value and _is_tensorlike(value[0]):
        rows = []
        for part in value:
            rows.extend(_rows(part, lone, name))
        return rows
    if lone == 1 and isinstance(value, (list, tuple)) and value and isinstance(value[0], list):
        if len({len(v) if isinstance(v, list) else -1 for v in value}) > 1:  # ragged rows
            return [_tensor(v, name) for v in value]
    tensor = _tensor(value, name)
    if unbatched or tensor.dim() <= lone:
        return [tensor if tensor.dim() >= lone else tensor.reshape(1) if lone else tensor]
    return list(tensor.unbind(0))


def _is_tensorlike(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim > 0


def _tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value)  # a list (of lists) of numbers, or an array
    except (TypeError, ValueError) as error:
        raise TracingError(
            f"`{name}` must be a tensor, an array or (nested) lists of numbers of one "
            f"width per row, got {type(value).__name__}: {error}"
        ) from None


def _dims(value: Any) -> int:
    if isinstance(value, (list, tuple)):
        if value and _is_tensorlike(value[0]):
            return value[0].ndim + 1 if value[0].ndim < 2 else value[0].ndim
        return 1 + _dims(value[0]) if value and isinstance(value[0], (list, tuple)) else 1
    return _tensor(value, "input").dim()


def _check_rows(name: str, got: list, ids: list, main: str) -> None:
    if len(got) != len(ids):
        raise TracingValueError(
            f"`{name}` has {len(got)} rows, but `{main}` has {len(ids)}: give one per row"
        )


def _labels(
    value: Any, ids: list[torch.Tensor], width: int, unbatched: bool, encoder_decoder: bool
) -> tuple[list[torch.Tensor], str]:
    tensor = _tensor(value, "labels")
    if unbatched:
        if tensor.dim() == 0 or (tensor.dim() == 1 and len(tensor) == 1 and width != 1):
            return [tensor.reshape(())], "class"
        rows = [tensor]
    else:  # a row each: a class label, or a label per token (or of their own width)
        rows = list(tensor.unbind(0)) if tensor.dim() > 0 else [tensor]
    _check_rows("labels", rows, ids, "input_ids")
    if rows[0].dim() == 0:
        return rows, "class"
    token = not encoder_decoder and all(
        r.shape[-1] == i.shape[-1] for r, i in zip(rows, ids, strict=True)
    )
    return rows, "token" if token else "own"


def _batch_labels(invokes: list[Rows], width: int, left: bool) -> torch.Tensor:
    kinds = {rows.labels for rows in invokes if rows.labels is not None}
    kind = "own" if "own" in kinds else kinds.pop()
    floating = any(r.is_floating_point() for rows in invokes for r in rows.fields.get("labels", []))
    rows: list[torch.Tensor] = []
    for invoke in invokes:
        given = invoke.fields.get("labels")
        if given is None:
            if floating:
                _required(invokes, "labels", sum(i.count for i in invokes))
            shape = () if kind == "class" else (width,) if kind == "token" else (1,)
            given = [torch.full(shape, -100, dtype=torch.long)] * invoke.count
        rows.extend(given)
    if kind == "class":
        return torch.stack(rows)
    if kind == "token":
        return _pad(rows, width, -100, left, "labels", -1)
    return _pad(rows, max(r.shape[-1] for r in rows), -100, False, "labels", -1)


def _with_defaults(invokes: list[Rows], name: str, main: str) -> list[torch.Tensor]:
    rows: list[torch.Tensor] = []
    for invoke in invokes:
        given = invoke.fields.get(name)
        if given is None:
            if name not in _DEFAULTS:  # no default: raises, as this invoke lacks it
                _required(invokes, name, sum(i.count for i in invokes))
            dim = -1 if main == "input_ids" else 0
            shapes = [_shape_of(r, main, dim) for r in invoke.fields[main]]
            given = [torch.full(s, _DEFAULTS[name], dtype=torch.long) for s in shapes]
        rows.extend(given)
    return rows


def _shape_of(row: torch.Tensor, main: str, dim: int) -> tuple[int, ...]:
    return tuple(row.shape) if main == "input_ids" else (row.shape[dim],)


def _required(invokes: list[Rows], name: str, total: int) -> list[torch.Tensor]:
    have = sum(rows.count for rows in invokes if name in rows.fields)
    if have != total:
        raise TracingValueError(
            f"{have} of {total} rows have `{name}`: it has no default for the others, so give "
            "it to every invoke of the trace or to none"
        )
    return [row for rows in invokes for row in rows.fields[name]]


def _pad(
    rows: list[torch.Tensor], width: int, value: Any, left: bool, name: str, dim: int
) -> torch.Tensor:
    if any(r.shape[dim] != width for r in rows):
        if value is None:
            raise TracingValueError(
                f"cannot batch rows of different lengths without a pad token: `{name}` has "
                "rows of several widths, and the tokenizer has no pad token. Set one "
                "(`model.tokenizer.pad_token = model.tokenizer.eos_token`), or give every "
                "invoke rows of one length."
            )
        if all(r.dim() == 1 for r in rows) and max(r.shape[0] for r in rows) == width:
            rows = _common(rows)  # token rows: padded in one call
            side = "left" if left else "right"
            return pad_sequence(rows, batch_first=True, padding_value=value, padding_side=side)
        rows = [_pad_row(r, width, value, left, dim) for r in rows]
    return torch.stack(_common(rows))


def _common(rows: list[torch.Tensor]) -> list[torch.Tensor]:
    """`rows` on one device with one dtype (defaults are made on the CPU, a mask may be
    bool beside a derived long one)."""
    device = rows[0].device
    rows = [r.to(device) for r in rows]
    dtypes = {r.dtype for r in rows}
    if len(dtypes) > 1:
        target = torch.promote_types(*list(dtypes)[:2])
        for other in list(dtypes)[2:]:
            target = torch.promote_types(target, other)
        rows = [r.to(target) for r in rows]
    return rows


def _pad_row(row: torch.Tensor, width: int, value: Any, left: bool, dim: int) -> torch.Tensor:
    missing = width - row.shape[dim]
    if missing <= 0:
        return row
    shape = list(row.shape)
    shape[dim] = missing
    filler = torch.full(shape, value, dtype=row.dtype, device=row.device)
    parts = (filler, row) if left else (row, filler)
    return torch.cat(parts, dim=dim)


def _positions(
    invokes: list[Rows],
    mask: torch.Tensor | None,
    width: int,
    left: bool,
    takes: Callable[[], bool],
) -> torch.Tensor | None:
    """Position ids: those given, and for other rows counted from their first token where
    the row is left padding then tokens (else as the model counts them); None when no
    row gives them and none needs them."""
    given = any("position_ids" in rows.fields for rows in invokes)
    if mask is None or mask.dim() != 2 or mask.shape[-1] != width:
        derive = None  # no mask, or one wider than the input (a cache continuation)
    else:
        mask = mask.long()
        derive = left and (mask[:, 0] == 0).any().item() and takes()
    if not given and not derive:
        return None
    if not given:  # all rows from the mask: at once, as `_counted` does row by row
        assert mask is not None
        counted = (mask.cumsum(-1) - 1).clamp(min=0)
        rising = (mask[:, 1:] >= mask[:, :-1]).all(-1) if width > 1 else mask[:, 0] >= 0
        padding_then_tokens = (mask[:, 0] == 0) & rising & mask.any(-1)
        ordinal = torch.arange(width, device=mask.device).expand_as(mask)
        return torch.where(padding_then_tokens[:, None], counted, ordinal)
    rows: list[torch.Tensor] = []
    start = 0
    for invoke in invokes:
        own = invoke.fields.get("position_ids")
        if own is not None:
            rows.extend(_pad_row(r, width, 0, left, -1) for r in own)
        elif mask is not None and mask.dim() == 2:
            for row in mask[start : start + invoke.count]:
                rows.append(_counted(row, width))
        else:
            rows.extend([torch.arange(width)] * invoke.count)
        start += invoke.count
    return _pad(rows, width, 0, left, "position_ids", -1)


def _counted(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Positions of one row: from its first token if it is padding then tokens."""
    row = mask.long().cpu()
    padding_then_tokens = bool(row[0] == 0) and bool((row[1:] >= row[:-1]).all())
    if padding_then_tokens and bool(row.any()):
        return (row.cumsum(-1) - 1).clamp(min=0)
    return torch.arange(width)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    return bool(a == b)


def fields_of(value: Mapping) -> dict[str, Any]:
    """The known fields of an encoding (a tokenizer's output, a dict)."""
    return {k: v for k, v in value.items() if k in FIELDS}
