"""The Jupyter layer: the `%%trace` cell magic and the widgets.

`%load_ext nnsight_lab` registers the magic (`magic`) and the rich displays
(`display`). Widgets (`module_tree`, `source_view`, `attention_view`,
`patching_heatmap`) are anywidgets whose browser side is a bundle in `static/`
built from `js/`; they receive plain data made by `serialization`, never engine
objects.
"""

from __future__ import annotations

from typing import Any

from .attention_view import AttentionView
from .display import register
from .magic import TraceMagics
from .module_tree import ModuleTree
from .patching_heatmap import PatchingHeatmap
from .source_view import SourceView

__all__ = [
    "AttentionView",
    "ModuleTree",
    "PatchingHeatmap",
    "SourceView",
    "load_ipython_extension",
]


def load_ipython_extension(shell: Any) -> None:
    """`%load_ext nnsight_lab`: the `%%trace` magic and rich displays of models."""
    shell.register_magics(TraceMagics)
    register(shell)
