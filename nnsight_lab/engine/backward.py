"""Gradients: `with loss.backward():` runs its body alongside the backward pass.

The body of the block is a mediator of its own, interleaved with
`loss.backward()` the way a trace body is interleaved with the forward pass.
Reading `tensor.grad` in it asks for the location `grad.<n>.grad.0`, which a
hook on that tensor offers when backward reaches it; assigning `tensor.grad`
(or editing it in place) changes the gradient that flows on to earlier layers.
Backward visits tensors in reverse order of the forward pass, so their
gradients must be read in that order. (A body that runs as a generator runs its
block the same way, through `stepped_mediator.SteppedBackward`.)

Outside such a block, `tensor.grad` is torch's own attribute (the older style
`retain_grad()` then `loss.backward()` works), with a clear error where torch
would silently give None.
"""

from __future__ import annotations

from types import FrameType
from typing import Any

import torch

from ..errors import OutOfOrderError, TracingError
from ..tracing import Body, CapturingContext
from .interleaver import Interleaver
from .mediator import Mediator, current_mediator


class Backward(CapturingContext):
    """The context of `with loss.backward(...):` inside a trace body."""

    def __init__(self, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        if not isinstance(tensor, torch.Tensor):
            raise TracingError(f"`with x.backward():` needs a tensor, got {type(tensor).__name__}")
        self.tensor, self.args, self.kwargs = tensor, args, kwargs

    def run(self, body: Body, frame: FrameType) -> None:
        current_mediator("with loss.backward()")
        self.interleave(Mediator(body.code, frame.f_globals, None))

    def interleave(self, mediator: Mediator) -> None:
        """Run backward from the tensor, with `mediator`'s body beside it."""
        interleaver = GradientInterleaver([mediator])
        try:
            interleaver.run(None, lambda: self.tensor.backward(*self.args, **self.kwargs))
        finally:
            interleaver.remove_hooks()


class GradientInterleaver(Interleaver):
    """An interleaver whose points are the gradients of watched tensors."""

    def __init__(self, mediators: list[Mediator]) -> None:
        super().__init__(mediators, batch_size=0)
        self.watched: dict[int, str] = {}
        self.hooks: list[Any] = []

    def watch(self, tensor: torch.Tensor) -> str:
        """The path of `tensor`'s gradient; hooks it on first use."""
        path = self.watched.get(id(tensor))
        if path is None:
            if not tensor.requires_grad:
                raise TracingError(
                    "this tensor does not require grad, so backward never reaches it: call "
                    "`.requires_grad_(True)` on it in the forward pass, before it is used."
                )
            path = self.watched[id(tensor)] = f"grad.{len(self.watched)}"
            self.hooks.append(tensor.register_hook(lambda grad: self._reached(path, grad)))
        return path

    def _reached(self, path: str, grad: torch.Tensor) -> torch.Tensor:
        self.started[path] = 1
        if path in self.wanted_outputs:
            grad = self.handle(f"{path}.grad.0", grad)
        self.finished[path] = 1
        return grad

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []

    def missed(self, location: str) -> BaseException:
        return OutOfOrderError(
            "this gradient was read after backward had already passed its tensor. Backward "
            "runs from the loss towards the input, so read `.grad` in reverse order of the "
            "forward pass (later layers first)."
        )


def grad_of(tensor: Any) -> Any:
    """`tensor.grad` in a trace body (what `x.grad` compiles to)."""
    mediator = current_mediator("x.grad", optional=True)
    interleaver = mediator.interleaver if mediator is not None else None
    if isinstance(interleaver, GradientInterleaver):
        return mediator.get(interleaver.watch(tensor), "grad")  # type: ignore[union-attr]
    if isinstance(tensor, torch.Tensor) and not tensor.is_leaf and not tensor.retains_grad:
        raise TracingError(
            "`.grad` of an activation can only be read inside `with loss.backward():` in the "
            "trace (or after `tensor.retain_grad()` and `loss.backward()`). Wrap the lines "
            "that read gradients in `with loss.backward():`."
        )
    return tensor.grad


def set_grad(tensor: Any, value: Any) -> None:
    """`tensor.grad = value` in a trace body."""
    mediator = current_mediator("x.grad", optional=True)
    interleaver = mediator.interleaver if mediator is not None else None
    if isinstance(interleaver, GradientInterleaver):
        mediator.set(interleaver.watch(tensor), "grad", value)  # type: ignore[union-attr]
    else:
        tensor.grad = value
