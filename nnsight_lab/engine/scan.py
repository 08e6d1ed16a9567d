"""`model.scan(input)`: a trace on fake tensors, to learn shapes without computing.

The scan backend runs the model under torch's `FakeTensorMode`: every tensor in
the forward pass is a fake with a real shape, dtype and device, and no data; no
weight is read, so it also works on a LanguageModel whose weights are still on
the meta device. The body runs as in any trace, and what it saves comes back as
it is: a saved tensor is a fake (its `.shape`, `.dtype` and `.device` are real,
its values do not exist), as in nnsight.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._pytree import tree_map

from .backends import LocalBackend

if TYPE_CHECKING:
    from .tracer import Tracer


class _Fakes:
    """One model's fake mode, and the fakes of its weights, kept alive between scans.

    torch's converter remembers the fake of a real tensor only while that fake lives, so
    without keeping them every scan would convert every weight again. During a scan the
    fakes stand in the modules' own parameter and buffer tables (`swapped`): an op
    given a real weight skips fake mode's cache and converts it on every call (an addmm
    took 0.9 ms that way, 0.1 ms on fakes).
    """

    def __init__(self) -> None:
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        self.slots: list[tuple[dict, str, torch.Tensor, FakeTensor]] = []  # table, name, both

    def refresh(self, module: torch.nn.Module) -> bool:
        """Fakes of the module's weights as they are now (a known tensor gets its memo, a
        new one a new fake); False if a fake no longer matches its tensor (`.data = ...`)."""
        self.slots = [
            (table, name, tensor, self.mode.from_tensor(tensor))
            for sub in module.modules()
            for table in (sub._parameters, sub._buffers)
            for name, tensor in table.items()
            if tensor is not None
        ]
        return all(_same_meta(fake, real) for _, _, real, fake in self.slots)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The fakes in place of the real weights, for the length of the block."""
        for table, name, _, fake in self.slots:
            table[name] = fake
        try:
            yield
        finally:
            for table, name, real, _ in self.slots:
                table[name] = real


def _same_meta(fake: FakeTensor, real: torch.Tensor) -> bool:
    return fake.shape == real.shape and fake.dtype == real.dtype and fake.device == real.device


_fakes: weakref.WeakKeyDictionary[torch.nn.Module, _Fakes] = weakref.WeakKeyDictionary()


def _fakes_of(module: torch.nn.Module) -> _Fakes:
    fakes = _fakes.get(module)
    if fakes is None or not fakes.refresh(module):
        fakes = _fakes[module] = _Fakes()
        fakes.refresh(module)
    return fakes


class ScanBackend(LocalBackend):
    """Runs a trace on fake tensors; the forward ends once every body is done (what the
    model returns is fake, so the rest of the pass could only cost time)."""

    stops_early = True

    def __call__(self, tracer: Tracer) -> dict[str, Any]:
        with _fakes_of(tracer.model._model).swapped():  # the body too sees fake weights
            return super().__call__(tracer)

    def call(self, tracer: Tracer, args: tuple, kwargs: dict) -> Any:
        module = tracer.model._model
        mode = _fakes[module].mode
        if hasattr(getattr(module, "config", None), "use_cache"):
            kwargs = {"use_cache": False, **kwargs}  # one pass: a key/value cache is no use
        with mode, torch.inference_mode():
            fake = tree_map(_faker(mode), (args, kwargs))
            return getattr(tracer.model, tracer.entry)(*fake[0], **fake[1])


def _faker(mode: FakeTensorMode) -> Callable[[Any], Any]:
    def fake(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and not isinstance(value, FakeTensor):
            return mode.from_tensor(value)
        return value

    return fake


SCAN = ScanBackend()
