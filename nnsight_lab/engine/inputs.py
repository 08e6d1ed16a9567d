"""A call's inputs `(args, kwargs)`, and its first input: what `.input` reads and replaces;
and an invoke's input made ready for the model (`prepare_input`)."""

from __future__ import annotations

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
        return model._prepare_input(*args, **kwargs)
    except TracingError as error:
        if where is None:
            raise
        raise type(error)(f"{where.filename}, line {where.lineno}: {error}") from error.__cause__
