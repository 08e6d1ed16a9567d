"""Wrapped models: `NNsight` for any module, `LanguageModel` for transformers LMs,
`demo_model()` for a real LM that runs offline."""

from __future__ import annotations

from .demo_model import demo_model
from .language_model import LanguageModel
from .nnsight import NNsight

__all__ = ["LanguageModel", "NNsight", "demo_model"]
