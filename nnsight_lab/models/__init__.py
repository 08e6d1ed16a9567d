"""Wrapped models: `NNsight` for any module, `LanguageModel` for transformers LMs."""

from __future__ import annotations

from .language_model import LanguageModel
from .nnsight import NNsight

__all__ = ["LanguageModel", "NNsight"]
