"""A call's inputs `(args, kwargs)`, and its first input: what `.input` reads and replaces;
and an invoke's input made ready for the model (`prepare_input`), and the invokes' inputs
batched into one call (`batch_inputs`).

A model says how it batches in one of two ways: ours, `_prepare_input(*args, **kwargs)
-> (prepared, rows)` and `_batch(prepared) -> (args, kwargs)`; or nnsight's, which its
docs give for custom models: `_batch_size(*inputs, **kwargs) -> rows` and
`_batch(invokes, fn) -> (args, kwargs)`, with `invokes` a list of `(args, kwargs)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import TracingError
from ..tracing import Body


def first_input(inputs: tuple[tuple, dict]) -> Any:
    """The first positional argument, else the first keyword argument's value."""
    args, kwargs = inputs
    return args[0] if args else next(iter(kwargs.values()))


def with_first_input(inputs: tuple[tuple, dict], value: Any) -> tuple[tuple, dict]:
    """`inputs` with the first input (as `first_input` finds it) replaced by `value`."""
    args, kwargs = inputs
    if args:
        return (value, *args[1:]), kwargs
    return args, {**kwargs, next(iter(kwargs)): value}


class FirstInput:
    """`.input` of anything with `.inputs` (a module's envoy, an operation's): the first
    input, read and replaced through `.inputs`."""

    __slots__ = ()
    inputs: tuple[tuple, dict]

    @property
    def input(self) -> Any:
        """The first input: the first positional argument, else the first keyword's value."""
        return first_input(self.inputs)

    @input.setter
    def input(self, value: Any) -> None:
        self.inputs = with_first_input(self.inputs, value)  # type: ignore[misc]  # a subclass property


def prepare_input(model: Any, args: tuple, kwargs: dict, where: Body | None) -> Any:
    """`model._prepare_input(*args, **kwargs)`; an input the model refuses raises its
    `TracingError` naming the user's line (`where`: the body of the trace or invoke)."""
    try:
        if _nnsight_protocol(model):
            return (args, kwargs), model._batch_size(*args, **kwargs)
        return model._prepare_input(*args, **kwargs)
    except TracingError as error:
        if where is None:
            raise
        raise type(error)(f"{where.filename}, line {where.lineno}: {error}") from error.__cause__


def batch_inputs(model: Any, prepared: list, fn: Callable[..., Any]) -> tuple[tuple, dict]:
    """The invokes' prepared inputs as one call of `fn` (the model's entry), through
    the model's `_batch` in whichever protocol it follows (see the module docstring)."""
    if _nnsight_protocol(model):
        return model._batch(prepared, fn)
    return model._batch(prepared)


def _nnsight_protocol(model: Any) -> bool:
    """Whether `model` batches the way nnsight's docs say: `_batch(invokes, fn)`."""
    cls = type(model)
    found = _PROTOCOL.get(cls)
    if found is None:
        found = _PROTOCOL[cls] = _batches_like_nnsight(cls)
    return found


_PROTOCOL: dict[type, bool] = {}  # per model class (a class's methods do not change)


def _batches_like_nnsight(cls: type) -> bool:
    batch = getattr(cls, "_batch", None)
    if batch is None or not hasattr(cls, "_batch_size"):
        return False
    try:  # `self`, `invokes`, `fn`
        return len(inspect.signature(batch).parameters) == 3
    except (TypeError, ValueError):
        return False
