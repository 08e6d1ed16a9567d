"""Two operations on the caller's frame: skip a `with` body, and write back saved names.

Skipping: `__enter__` sets a line-trace function on the caller's frame that raises
`SkipBody` as soon as the body's first line starts; `__exit__` receives it, puts
back whatever tracing was active before (a debugger, coverage), stops handling the
exception (see `forget_skip`) and runs the body itself. Writing back: saved values
become variables of the caller, in a module, a class body or a function.

A body that starts with `try:` is the exception: CPython gives the `try` line a `NOP`
that no exception handler covers, not even the `with`'s, so `SkipBody` raised there
would leave the whole frame. There the trace function raises on an instruction event
instead, at the last instruction of the `with` header (see `raise_point`).
"""

from __future__ import annotations

import ctypes
import dis
import sys
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from ..errors import TraceSourceError


class SkipBody(Exception):
    """Raised on the first line of a traced body so that Python does not run it."""


def _no_trace(frame: FrameType, event: str, arg: Any) -> None:
    return None


class BodySkipper:
    """Arms the caller's frame to skip the body of the `with` being entered.

    `first_line` is the line of the body's first statement that does something:
    a leading `pass` compiles to an instruction outside the `with`'s exception
    handler, so raising there would escape the block. `on_reach` is called there,
    when the `with` statement's later context managers have been entered, and its
    answer kept as `probed`.

    The global trace function is always replaced for the moment (and put back by
    `disarm`): Python consults `frame.f_trace` only under a Python-level one, and
    coverage's C tracer is not. `unbound` is the `as` name that the skip leaves
    unassigned (a body starting with `try:`, where `at` is `raise_point`'s answer), for
    the caller to bind.
    """

    __slots__ = (
        "frame",
        "previous_global",
        "previous_local",
        "previous_opcodes",
        "unbound",
        "probed",
        "_offset",
        "_first_line",
        "_on_reach",
    )

    def __init__(
        self,
        frame: FrameType,
        first_line: int,
        at: tuple[int | None, str | None] = (None, None),
        on_reach: Callable[[], Any] | None = None,
    ) -> None:
        self.frame = frame
        self.probed: Any = None
        self.previous_global = sys.gettrace()
        self.previous_local = frame.f_trace
        self.previous_opcodes: bool | None = None  # set only where opcode events are turned on
        self._offset, self.unbound = at  # see `raise_point`
        self._first_line, self._on_reach = first_line, on_reach
        sys.settrace(_no_trace)
        if self._offset is not None:
            self.previous_opcodes = frame.f_trace_opcodes
            frame.f_trace_opcodes = True
        frame.f_trace = self._raise_skip

    def _raise_skip(self, frame: FrameType, event: str, arg: Any) -> Any:
        offset = self._offset
        if (
            frame.f_lasti == offset
            if offset is not None
            else event == "line" and frame.f_lineno >= self._first_line
        ):
            on_reach = self._on_reach
            if on_reach is not None:  # the body's own context: `with trace(x), no_grad():`
                self.probed = on_reach()
            raise SkipBody
        return self._raise_skip

    def disarm(self) -> None:
        """Restore the tracing that was active before (a raising trace function unsets it)."""
        frame = self.frame
        frame.f_trace = self.previous_local
        if self.previous_opcodes is not None:
            frame.f_trace_opcodes = self.previous_opcodes
        sys.settrace(self.previous_global)
        self.frame = None  # type: ignore[assignment]


_STORES = ("STORE_NAME", "STORE_FAST", "STORE_GLOBAL", "STORE_DEREF")


def raise_point(code: CodeType, enter: int, first_line: int) -> tuple[int | None, str | None]:
    """Where to raise `SkipBody` in `code`, whose `with` header calls `__enter__` at
    instruction `enter`: `(None, None)` on the first line event of `first_line` (the usual
    case), else `(offset, name)`: on the instruction at `offset`, the last one of the
    header that an exception handler covers, and `name` the `as` name that instruction
    would have stored (None if it stores none).

    Raises:
        TraceSourceError: no instruction of the header can skip the body.
    """
    entries = dis.Bytecode(code).exception_entries  # type: ignore[attr-defined]  # 3.11+
    handlers = [(e.start, e.end, e.target) for e in entries]

    def handler(offset: int) -> int | None:  # the table is flat: one entry per offset
        return next((t for start, end, t in handlers if start <= offset < end), None)

    outer = handler(enter)  # a `try` around the `with`: its handler is not the `with`'s

    def inside(offset: int) -> bool:  # in the `with`'s handler, or a later item's of it
        target = handler(offset)
        return target is not None and target != outer

    after = [i for i in dis.get_instructions(code) if i.offset > enter]
    lines = [i for i in after if (i.positions and i.positions.lineno or 0) >= first_line]
    if not lines or inside(lines[0].offset):
        return None, None
    header = [i for i in after if i.offset < lines[0].offset and inside(i.offset)]
    if not header:
        raise TraceSourceError(
            f"line {first_line}: this traced `with` block cannot be skipped where its body "
            "starts; put a plain statement (e.g. `_ = None`) first in the body."
        )
    last = header[-1]
    return last.offset, (last.argval if last.opname in _STORES else None)


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
