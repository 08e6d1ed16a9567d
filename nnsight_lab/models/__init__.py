"""Wrapped models: `NNsight` for any module, `LanguageModel` for transformers LMs
(`TransformersModel`, nnsight 0.8's name, is the same class), `demo_model()` for a
real LM that runs offline."""

from __future__ import annotations

from .demo_model import demo_model
from .language_model import LanguageModel, TransformersModel
from .nnsight import NNsight

__all__ = ["LanguageModel", "NNsight", "TransformersModel", "demo_model"]
