"""Capturing a `with` block's body and running it elsewhere (no torch here)."""

from __future__ import annotations

from .context import CapturingContext, SavingContext, save
from .namespace import Layer, Namespace
from .source import Body

__all__ = ["Body", "CapturingContext", "Layer", "Namespace", "SavingContext", "save"]
