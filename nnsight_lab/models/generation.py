"""The `generator` submodule a LanguageModel adds, so generation can be read like a module.

`llm.generator` is called once when generation ends, with the full token ids:
`llm.generator.output`. `llm.generator.streamer` is called once per generation
step with that step's new tokens: `llm.generator.streamer.output` inside
`tracer.iter[...]`. Both are identity modules; calling them through the model
is what makes their values locations a trace body can wait on.
"""

from __future__ import annotations

import torch
from torch import nn


class Streamer(nn.Module):
    """Called with each step's new token ids `[batch]`."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens


class Generator(nn.Module):
    """Called with the generated token ids `[batch, seq]` when generation ends."""

    def __init__(self) -> None:
        super().__init__()
        self.streamer = Streamer()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return ids


class StepStreamer:
    """A transformers streamer that hands each step's tokens to `Streamer` (the prompt,
    which transformers puts first, is not a step)."""

    def __init__(self, streamer: nn.Module) -> None:
        self.streamer = streamer
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_seen:
            self.streamer(value)
        self.prompt_seen = True

    def end(self) -> None:
        pass
