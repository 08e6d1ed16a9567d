"""The notebook widgets: `ModuleTree`, `SourceView`, `AttentionView`, `PatchingHeatmap`."""

from __future__ import annotations

from .jupyter import AttentionView, ModuleTree, PatchingHeatmap, SourceView

__all__ = ["AttentionView", "ModuleTree", "PatchingHeatmap", "SourceView"]
