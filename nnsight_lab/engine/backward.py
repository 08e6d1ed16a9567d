"""Gradients: `with loss.backward():` runs its body alongside the backward pass.

The body of the block is a mediator of its own, interleaved with
`loss.backward()` the way a trace body is interleaved with the forward pass.
Reading `tensor.grad` in it asks for the location `grad.<n>.grad.0`, which a
hook on that tensor offers when backward reaches it (for an invoke's rows of a
batch, which the model never used, a hook on the batch's tensor, cut to those
rows; see `GradientInterleaver._hook`); assigning `tensor.grad`
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
        interleaver = GradientInterleaver([mediator], self.tensor)
        try:
            interleaver.run(None, lambda: self.tensor.backward(*self.args, **self.kwargs))
        finally:
            interleaver.remove_hooks()


class GradientInterleaver(Interleaver):
    """An interleaver whose points are the gradients of watched tensors.

    Args:
        mediators: the block's body (one).
        root: the tensor backward starts from (the loss).
    """

    def __init__(self, mediators: list[Mediator], root: torch.Tensor) -> None:
        super().__init__(mediators, batch_size=0)
        self.root = root
        self.watched: dict[int, str] = {}
        self.tensors: dict[str, torch.Tensor] = {}  # path -> the watched tensor
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
            path = f"grad.{len(self.watched)}"
            self._hook(tensor, path)
            self.watched[id(tensor)] = path
            self.tensors[path] = tensor
        return path

    def _hook(self, tensor: torch.Tensor, path: str) -> None:
        """Hooks where backward passes `tensor`'s gradient.

        An invoke's value is a view of the batch's tensor (its rows), which the model
        did not use: backward passes only the batch's tensor then. So a view is hooked
        on its base too: when the base's gradient comes and the view's has not (a view
        that backward reaches gets its gradient first), the view's elements are cut out
        of the base's, and an edit is put back into those elements only.
        """
        self.hooks.append(tensor.register_hook(lambda grad: self._reached(path, grad)))
        base = tensor._base
        if base is None or not base.requires_grad:
            return
        view = _View(tensor, base)

        def at_base(grad: torch.Tensor) -> torch.Tensor | None:
            if path in self.started:
                return None  # the view's own gradient came: served there
            return view.put(self._reached(path, view.cut(grad)))

        self.hooks.append(base.register_hook(at_base))

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
        tensor = self.tensors.get(location.rsplit(".", 2)[0])
        if tensor is not None and not _reaches(self.root, tensor):
            return TracingError(
                "backward from this loss never reaches this tensor (the loss does not depend "
                "on it), so it has no gradient: read `.grad` of tensors the loss is computed from."
            )
        return OutOfOrderError(
            "this gradient was read after backward had already passed its tensor. Backward "
            "runs from the loss towards the input, so read `.grad` in reverse order of the "
            "forward pass (later layers first)."
        )


class _View:
    """Where a view's elements lie in its base, to cut them out of the base's gradient."""

    def __init__(self, view: torch.Tensor, base: torch.Tensor) -> None:
        self.shape, self.stride = view.shape, view.stride()
        self.offset = view.storage_offset() - base.storage_offset()
        self.base_stride = base.stride()
        self.grad: torch.Tensor | None = None  # the base's gradient, laid out as the base
        self.part: torch.Tensor | None = None  # the view's elements of it

    def cut(self, grad: torch.Tensor) -> torch.Tensor:
        """The view's part of `grad` (the base's gradient), as a view of it."""
        if grad.stride() != self.base_stride:
            grad = torch.empty_strided(
                grad.shape, self.base_stride, dtype=grad.dtype, device=grad.device
            ).copy_(grad)
        self.grad, self.part = grad, self._of(grad)
        return self.part

    def put(self, new: Any) -> torch.Tensor:
        """The base's gradient with the view's part replaced by `new` (what the body left)."""
        full, part = self.grad, self.part
        self.grad = self.part = None
        assert full is not None and part is not None
        if new is part:
            return full  # read, or edited in place
        if not isinstance(new, torch.Tensor) or new.shape != part.shape:
            shape = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
            raise TracingError(
                f"`x.grad = value` needs a tensor of the gradient's shape {tuple(part.shape)}, "
                f"got {shape}"
            )
        full = full.clone()
        self._of(full).copy_(new)
        return full

    def _of(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.as_strided(self.shape, self.stride, grad.storage_offset() + self.offset)


def _reaches(root: torch.Tensor, tensor: torch.Tensor) -> bool:
    """Whether backward from `root` passes `tensor` or, for a view, its base (walks the
    graph: only for an error's message)."""
    tensors = [t for t in (tensor, tensor._base) if t is not None]
    nodes = {t.grad_fn for t in tensors if t.grad_fn is not None}
    seen: set[Any] = set()
    todo = [root.grad_fn] if root.grad_fn is not None else []
    while todo:
        node = todo.pop()
        if node in nodes or any(getattr(node, "variable", None) is t for t in tensors):
            return True  # `variable`: the leaf a gradient accumulates into
        if node not in seen:
            seen.add(node)
            todo.extend(child for child, _ in node.next_functions if child is not None)
    return False


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
