"""`PatchingHeatmap`: a `[layers, positions]` sweep result as a diverging heatmap.

The values travel as one float32 buffer `[components, layers, positions]`; the
browser draws them on a canvas, centred at 0. `.to_plotly()` gives the same data
as a plotly figure, for export (the widget itself does not carry plotly's JS).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import anywidget
import traitlets

from .serialization import as_tensor, float32_bytes, token_label

_STATIC = pathlib.Path(__file__).parent / "static"


class PatchingHeatmap(anywidget.AnyWidget):
    """A heatmap of a patching sweep.

    Args:
        values: `[layers, positions]` or `[components, layers, positions]` (tensor,
            array or lists), e.g. from `nnsight_lab.patching.activation_patching`.
        tokens: one label per position (default: the position numbers).
        layers: one label per layer (default: `0`, `1`, ...).
        components: one label per component (default: `0`, `1`, ...).
        title: shown above the map.

    Example:
        >>> PatchingHeatmap(result, tokens=llm.tokenizer.tokenize(clean), title="logit diff")
    """

    _esm = _STATIC / "patching_heatmap.js"
    values = traitlets.Bytes().tag(sync=True)
    shape = traitlets.List(traitlets.Int()).tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    layers = traitlets.List(traitlets.Unicode()).tag(sync=True)
    components = traitlets.List(traitlets.Unicode()).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    component = traitlets.Int(0).tag(sync=True)
    selected = traitlets.List(traitlets.Int()).tag(sync=True)

    def __init__(
        self,
        values: Any,
        *,
        tokens: Sequence[str] | None = None,
        layers: Sequence[Any] | None = None,
        components: Sequence[str] | None = None,
        title: str = "",
    ) -> None:
        data = as_tensor(values, "values", (2, 3))
        if data.dim() == 2:
            data = data.unsqueeze(0)
        count, rows, columns = data.shape
        self._data = data
        super().__init__(
            values=float32_bytes(data),
            shape=[count, rows, columns],
            tokens=_labels(tokens, columns, "tokens", "position", default=False),
            layers=_labels(layers, rows, "layers", "layer"),
            components=_labels(components, count, "components", "component"),
            title=str(title),
        )

    def to_plotly(self) -> Any:
        """The same data as a `plotly.graph_objects.Figure` (one heatmap per component).

        Returns:
            A figure with the diverging scale centred at 0 and the token labels.
        """
        import plotly.graph_objects as go  # plotly is big; only export needs it

        limit = float(self._data.abs().max()) or 1.0
        x = [f"{i} {t}" for i, t in enumerate(self.tokens)] or [
            str(i) for i in range(self.shape[2])
        ]
        figure = go.Figure()
        for index, name in enumerate(self.components):
            figure.add_trace(
                go.Heatmap(
                    z=self._data[index].tolist(),
                    x=x,
                    y=self.layers,
                    zmid=0,
                    zmin=-limit,
                    zmax=limit,
                    colorscale="RdBu_r",
                    name=name,
                    visible=index == self.component,
                    hovertemplate="layer %{y}, position %{x}: %{z:.4g}<extra></extra>",
                )
            )
        figure.update_layout(
            title=self.title,
            xaxis_title="position",
            yaxis_title="layer",
            yaxis_autorange="reversed",
        )
        return figure


def _labels(
    labels: Sequence[Any] | None, count: int, name: str, what: str, default: bool = True
) -> list[str]:
    if labels is None:
        return [str(i) for i in range(count)] if default else []
    if isinstance(labels, str):
        raise TypeError(f"{name} must be a list of {count} labels, one per {what}")
    labels = [token_label(str(label)) for label in labels]
    if len(labels) != count:
        raise ValueError(f"{name} has {len(labels)} labels but the values have {count} {what}s")
    return labels
