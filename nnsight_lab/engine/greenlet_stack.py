"""`run_deep(function, *args)`: call `function` far enough from its greenlet's stack edge
that a native backtrace taken inside it never walks off the greenlet's stack.

Why: a greenlet runs on a slice of the C stack that starts where it was first
switched to. The native frames above that edge (the `switch()` that started it,
`Mediator.start`...) are gone once the model side returns from them and calls the
model, which writes its own frames over those addresses; greenlet only restores
the greenlet's own slice. A native unwinder that walks up past the greenlet's first
frame therefore reads the model side's frames as if they were its callers', and
follows garbage pointers. torch does exactly that on every error it raises from
C++ (`c10::Error` records a backtrace of up to 64 frames with glibc's
`backtrace()`): `h[99]` in a body killed the process with SIGSEGV whenever the
bytes there happened to look like a frame, as they do with a trace function set
(pdb, debugpy, coverage: their calls leave return addresses on the stack).

The fix keeps the unwinder inside the greenlet: the body runs below a chain of
`_Frame`s, each one native frame or two and no Python frame, so the 64 frames a
backtrace records end before the greenlet's edge. It costs about 1 us per body
started in a greenlet (a stepped body runs on its caller's stack: not affected).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

# Native frames between a body and its greenlet's edge; torch records 64 (plus the
# frame that asks), so this leaves a margin for a backtrace that skips none.
_FRAMES = 80


class _Frame(functools.partial):
    """A call that adds native stack frames: a `partial` with an instance dict is not
    merged into the `partial` it wraps, so each one is called by the next."""


def _chain(function: Callable[..., Any], frames: int) -> Callable[..., Any]:
    for _ in range(frames // 2):  # a `partial` call is two native frames
        function = _Frame(function)
        function.padding = True  # type: ignore[attr-defined]
    return function


_exec = _chain(exec, _FRAMES)


def run_deep(code: Any, namespace: dict) -> None:
    """`exec(code, namespace)`, at least `_FRAMES` native frames below this call."""
    _exec(code, namespace)
