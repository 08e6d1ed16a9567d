"""Activation patching sweeps: how much of a behaviour one activation carries.

- `sweep`: `activation_patching`, the clean activations patched into the corrupted
  run one (layer, position) at a time, many patched runs per forward pass.
- `corrupted`: the corrupted run, whose prefix before a patch is computed once.
- `lazy_logits`: logits projected onto the vocabulary only where the metric reads them.
"""

from __future__ import annotations

from .sweep import activation_patching, find_blocks

__all__ = ["activation_patching", "find_blocks"]
