"""`AttentionView`: attention patterns, a grid of heads and one head large.

Exact weights travel only for the head shown large (float32 `[q, k]`); the grid
of heads gets 8-bit thumbnails of at most 64 x 64 cells per head. Picking another
head or layer in the browser writes `head` / `layer`, and the Python side answers
with that head's weights (and the layer's thumbnails). So 12 layers x 12 heads x
128 tokens cost 64 KB + 48 KB on the wire and in a saved notebook, not 9 MB.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import anywidget
import torch
import traitlets

from .serialization import as_tensor, float32_bytes, token_label

THUMBNAIL_CELLS = 64

_STATIC = pathlib.Path(__file__).parent / "static"


class AttentionView(anywidget.AnyWidget):
    """Attention patterns with token-to-token hover.

    Args:
        attention: `[layers, heads, q, k]` or `[heads, q, k]` weights (tensor, array or
            lists), e.g. `torch.stack([a[0] for a in out.attentions])`.
        tokens: the key tokens as strings, `k` of them.
        query_tokens: the query tokens, `q` of them (default: the last `q` of `tokens`).
        layer, head: what to show first.

    Raises:
        ValueError: the shapes and token lists do not match.

    Example:
        >>> AttentionView(attn, tokens=llm.tokenizer.tokenize("The Eiffel Tower"))
    """

    _esm = _STATIC / "attention_view.js"
    values = traitlets.Bytes().tag(sync=True)
    thumbnails = traitlets.Bytes().tag(sync=True)
    thumb_shape = traitlets.List(traitlets.Int()).tag(sync=True)
    shape = traitlets.List(traitlets.Int()).tag(sync=True)
    num_layers = traitlets.Int(1).tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    head = traitlets.Int(0).tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    query_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(
        self,
        attention: Any,
        tokens: Sequence[str],
        *,
        query_tokens: Sequence[str] | None = None,
        layer: int = 0,
        head: int = 0,
    ) -> None:
        weights = as_tensor(attention, "attention", (3, 4))
        if weights.dim() == 3:
            weights = weights.unsqueeze(0)
        layers, heads, q, k = weights.shape
        tokens = _strings(tokens, "tokens", k, "key")
        if query_tokens is None:
            query_tokens = tokens[-q:] if q <= k else None
        query_tokens = _strings(query_tokens, "query_tokens", q, "query")
        _check_index(layer, layers, "layer")
        _check_index(head, heads, "head")
        self._weights = weights
        thumbs = thumbnails(weights[layer])
        super().__init__(
            values=float32_bytes(weights[layer, head]),
            thumbnails=thumbs.numpy().tobytes(),
            thumb_shape=list(thumbs.shape),
            shape=[heads, q, k],
            num_layers=layers,
            layer=layer,
            head=head,
            tokens=tokens,
            query_tokens=query_tokens,
        )

    @traitlets.validate("layer")
    def _valid_layer(self, proposal: dict) -> int:
        _check_index(proposal["value"], self.num_layers, "layer")
        return proposal["value"]

    @traitlets.validate("head")
    def _valid_head(self, proposal: dict) -> int:
        _check_index(proposal["value"], self.shape[0] if self.shape else 1, "head")
        return proposal["value"]

    @traitlets.observe("layer", "head")
    def _send_selection(self, change: dict) -> None:
        if not hasattr(self, "_weights"):
            return  # still in __init__
        with self.hold_sync():  # one message: the browser redraws once
            self.values = float32_bytes(self._weights[self.layer, self.head])
            if change["name"] == "layer":
                self.thumbnails = thumbnails(self._weights[self.layer]).numpy().tobytes()


def thumbnails(layer: torch.Tensor, cells: int = THUMBNAIL_CELLS) -> torch.Tensor:
    """`[heads, q, k]` weights as uint8 thumbnails `[heads, <=cells, <=cells]`: each cell
    the max of the weights it covers, 255 being the head's own largest weight."""
    heads, q, k = layer.shape
    rows, columns = (-(-n // -(-n // cells)) for n in (q, k))  # ceil(n / ceil(n / cells))
    padded = torch.nn.functional.pad(layer, (0, -k % columns, 0, -q % rows))
    pooled = torch.nn.functional.adaptive_max_pool2d(padded, (rows, columns))
    peak = pooled.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
    return (pooled.clamp(min=0) / peak * 255).round().to(torch.uint8)


def _strings(values: Sequence[str] | None, name: str, count: int, what: str) -> list[str]:
    if values is None or isinstance(values, str):
        raise TypeError(f"{name} must be a list of {count} strings, one per {what} position")
    values = [token_label(str(v)) for v in values]
    if len(values) != count:
        raise ValueError(
            f"{name} has {len(values)} strings but the attention has {count} {what} positions "
            f"(shape [..., q, k]); pass one string per {what} token."
        )
    return values


def _check_index(index: int, count: int, name: str) -> None:
    if not 0 <= index < count:
        raise ValueError(f"{name} {index} is out of range: there are {count} (0 to {count - 1})")
