"""`model.scan(input)`: a trace on fake tensors, to learn shapes without computing.

The scan backend runs the model under torch's `FakeTensorMode`: every tensor in
the forward pass is a fake with a real shape, dtype and device, and no data; no
weight is read, so it also works on a LanguageModel whose weights are still on
the meta device. The body runs as in any trace; what it saves must not need real
values (save `.shape`, not the tensor).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._pytree import tree_flatten, tree_map

from ..errors import TracingError
from ..tracing import save
from ..tracing.rewrite import SAVE
from .backends import HELPERS, LocalBackend

if TYPE_CHECKING:
    from .tracer import Tracer

# One fake mode per model: it remembers the fakes of the model's weights between scans.
_modes: weakref.WeakKeyDictionary[torch.nn.Module, FakeTensorMode] = weakref.WeakKeyDictionary()


class ScanBackend(LocalBackend):
    """Runs a trace on fake tensors."""

    def call(self, tracer: Tracer, args: tuple, kwargs: dict) -> Any:
        module = tracer.model._model
        mode = _modes.get(module)
        if mode is None:
            mode = _modes[module] = FakeTensorMode(allow_non_fake_inputs=True)
        if hasattr(getattr(module, "config", None), "use_cache"):
            kwargs = {"use_cache": False, **kwargs}  # one pass: a key/value cache is no use
        with mode, torch.inference_mode():
            fake = tree_map(_faker(mode), (args, kwargs))
            return getattr(tracer.model, tracer.entry)(*fake[0], **fake[1])

    def helpers(self, tracer: Tracer) -> dict[str, Any]:
        return {**HELPERS, SAVE: _save_no_fakes}


def _save_no_fakes(value: Any) -> Any:
    if any(isinstance(leaf, FakeTensor) for leaf in tree_flatten(value)[0]):
        raise TracingError(
            "a scan computes shapes, not values, so this tensor has no data to keep. "
            "Save what the scan knows instead, e.g. `x.shape` or `x.dtype`, or use "
            "`model.trace(...)` for real values."
        )
    return save(value)


def _faker(mode: FakeTensorMode) -> Callable[[Any], Any]:
    def fake(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and not isinstance(value, FakeTensor):
            return mode.from_tensor(value)
        return value

    return fake


SCAN = ScanBackend()
