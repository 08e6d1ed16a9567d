"""Plain data for widgets: tensors as float32 buffers, module paths as access paths,
activations as a few statistics.

Widgets never hold engine objects or tensors: what they send is made here, by pure
functions, so it is easy to test and small on the wire (binary buffers, never JSON
lists of numbers).
"""

from __future__ import annotations

from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor

HIST_BINS = 24


def as_tensor(values: Any, name: str, dims: tuple[int, ...]) -> torch.Tensor:
    """`values` (tensor, NumPy array or nested lists) as a float32 CPU tensor.

    Args:
        values: the data.
        name: the argument's name, for the error.
        dims: the numbers of dimensions accepted.

    Raises:
        TypeError: `values` is not array-like.
        ValueError: it has the wrong number of dimensions, or is empty.
    """
    if isinstance(values, torch.Tensor):
        tensor = values.detach()
    else:
        try:
            tensor = torch.as_tensor(values)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"{name} must be a tensor, an array or nested lists of numbers, "
                f"got {type(values).__name__}"
            ) from None
    if tensor.dim() not in dims:
        wanted = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {wanted}, got shape {list(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty (shape {list(tensor.shape)})")
    return tensor.to("cpu", torch.float32).contiguous()


def float32_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's values as little-endian float32 bytes, row-major (a binary buffer)."""
    return tensor.to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()


def access_path(path: str, root: str) -> str:
    """`model.transformer.h.0` -> `llm.transformer.h[0]` for a model named `root`."""
    parts = path.split(".")[1:]
    return root + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts)


def summary(value: Any) -> dict[str, Any] | None:
    """Shape, dtype, device and statistics of a tensor (the first tensor of a tuple),
    with a histogram of `HIST_BINS` bins; None if there is no tensor."""
    tensor = first_tensor(value)
    if tensor is None:
        return None
    info: dict[str, Any] = {
        "shape": list(tensor.shape),
        "dtype": str(tensor.dtype).removeprefix("torch."),
        "device": str(tensor.device),
    }
    if isinstance(tensor, FakeTensor) or tensor.is_meta or tensor.numel() == 0:
        return info  # a scan: shapes, no values
    if tensor.dtype == torch.bool or tensor.is_complex():
        return info
    data = tensor.detach().float()
    finite = data[torch.isfinite(data)]
    if finite.numel() == 0:
        return info
    low, high = finite.min(), finite.max()
    # One transfer for all the numbers (a device sync per .item() would be slow on GPU).
    numbers = torch.stack([finite.mean(), finite.std(correction=0), low, high]).tolist()
    hist = torch.histc(finite, bins=HIST_BINS, min=numbers[2], max=numbers[3])
    info.update(
        mean=numbers[0],
        std=numbers[1],
        min=numbers[2],
        max=numbers[3],
        hist=[int(c) for c in hist.tolist()],
        hist_range=[numbers[2], numbers[3]],
    )
    return info


def first_tensor(value: Any) -> torch.Tensor | None:
    """`value` if it is a tensor, else the first tensor in a tuple/list/dict output."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        items: Any = value
    elif isinstance(value, dict):
        items = value.values()
    elif hasattr(value, "to_tuple"):  # transformers' ModelOutput
        items = value.to_tuple()
    else:
        return None
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's characters (GPT-2, Llama 3, SmolLM) -> the bytes they stand for:
    printable Latin-1 bytes stand for themselves, the other 68 are moved to U+0100 on."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    moved = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + i): b for i, b in enumerate(moved)})
    return table


_BYTES = _byte_alphabet()
_SHOWN = {"\n": "↵", "\t": "⇥", "\r": "↵"}


def token_label(token: str) -> str:
    """A tokenizer's token as text a reader sees: byte-level BPE's `Ġ` and SentencePiece's
    `▁` become the space they stand for (non-ASCII bytes become their characters),
    newlines and tabs a visible mark; anything else is left as it is.

    Example:
        >>> token_label("ĠParis"), token_label("▁Paris"), token_label("Ċ")
        (' Paris', ' Paris', '↵')
    """
    if any(ord(c) > 255 for c in token) and all(c in _BYTES for c in token):
        token = bytes(_BYTES[c] for c in token).decode("utf-8", errors="replace")
    token = token.replace("▁", " ")
    return "".join(_SHOWN.get(c, c) for c in token)
