"""Two operations on the caller's frame: skip a `with` body, and write back saved names.

Skipping: `__enter__` sets a line-trace function on the caller's frame that raises
`SkipBody` as soon as the body's first line starts; `__exit__` receives it, puts
back whatever tracing was active before (a debugger, coverage), stops handling the
exception (see `forget_skip`) and runs the body itself. Writing back: saved values
become variables of the caller, in a module, a class body or a function.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any


class SkipBody(Exception):
    """Raised on the first line of a traced body so that Python does not run it."""


def _no_trace(frame: FrameType, event: str, arg: Any) -> None:
    return None


class BodySkipper:
    """Arms the caller's frame to skip the body of the `with` being entered.

    `first_line` is the line of the body's first statement that does something:
    a leading `pass` compiles to an instruction outside the `with`'s exception
    handler, so raising there would escape the block. `on_reach` is called there,
    when the `with` statement's later context managers have been entered.
    """

    __slots__ = ("frame", "previous_global", "previous_local")

    def __init__(
        self, frame: FrameType, first_line: int, on_reach: Callable[[], None] | None = None
    ) -> None:
        self.frame = frame
        self.previous_global = sys.gettrace()
        self.previous_local = frame.f_trace
        if self.previous_global is None:
            sys.settrace(_no_trace)

        def raise_skip(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "line" and frame.f_lineno >= first_line:
                if on_reach is not None:
                    on_reach()  # the body's own context: `with trace(x), torch.no_grad():`
                raise SkipBody
            return raise_skip

        frame.f_trace = raise_skip

    def disarm(self) -> None:
        """Restore the tracing that was active before (a raising trace function unsets it)."""
        self.frame.f_trace = self.previous_local
        sys.settrace(self.previous_global)
        self.frame = None  # type: ignore[assignment]


_set_handled_exception = ctypes.pythonapi.PyErr_SetHandledException  # Python >= 3.11
_set_handled_exception.argtypes = [ctypes.py_object]
_set_handled_exception.restype = None


def forget_skip() -> None:
    """Stop handling `SkipBody` (from `__exit__`, where the block has caught it).

    The traced body and the model run inside `__exit__`, so Python counts `SkipBody` as
    the exception being handled there. Every exception raised meanwhile, even one
    caught at once (a `getattr` with a default inside transformers, thousands per
    generation), would then be built in full to record it as its context: a model ran
    about 3% slower. Python restores what it handled before when `__exit__` returns.
    """
    _set_handled_exception(None)


_CO_OPTIMIZED = 0x0001
if sys.version_info < (3, 13):  # from 3.13 on, f_locals writes through (PEP 667)
    _locals_to_fast = ctypes.pythonapi.PyFrame_LocalsToFast
    _locals_to_fast.argtypes = [ctypes.py_object, ctypes.c_int]
    _locals_to_fast.restype = None


def write_names(frame: FrameType, values: dict[str, Any]) -> None:
    """Make `values` variables of `frame`, as if the frame had assigned them."""
    if not values:
        return
    if not frame.f_code.co_flags & _CO_OPTIMIZED:
        frame.f_locals.update(values)  # module or class body: f_locals is the real dict
        return
    if sys.version_info >= (3, 13):
        for name, value in values.items():
            frame.f_locals[name] = value  # a write-through proxy since PEP 667
        return
    frame.f_locals.update(values)
    _locals_to_fast(frame, 0)


def release_locals(frame: FrameType) -> None:
    """Drop the snapshot of a function's variables that reading `f_locals` leaves on the frame.

    Before Python 3.13 that snapshot dict lives as long as the frame and keeps every
    variable it saw alive, even after the function `del`s it.
    """
    if frame.f_code.co_flags & _CO_OPTIMIZED and sys.version_info < (3, 13):
        frame.f_locals.clear()
