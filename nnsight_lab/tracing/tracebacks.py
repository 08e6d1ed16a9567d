"""Tracebacks that show the user's lines, not the engine's; errors re-raised as they were."""

from __future__ import annotations

import os
from types import TracebackType
from typing import NoReturn

import greenlet

_INTERNAL = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
    os.path.dirname(os.path.abspath(greenlet.__file__)) + os.sep,
)


def is_internal(filename: str) -> bool:
    """Whether a frame of this file belongs to nnsight_lab (or the coroutine library)."""
    return filename.startswith(_INTERNAL)


def user_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback `tb` without nnsight_lab's own frames."""
    kept = []
    while tb is not None:
        if not is_internal(tb.tb_frame.f_code.co_filename):
            kept.append(tb)
        tb = tb.tb_next
    result = None
    for entry in reversed(kept):
        result = TracebackType(result, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return result


def reraise(error: BaseException) -> NoReturn:
    """Raise `error` again, far from where it was raised, with the chain it had there.

    A `raise` sets the exception being handled at that point (an engine's internal
    `Abort`, say) as the error's `__context__`, over the one the user's code gave it
    (an `except IndexError: raise KeyError(...)` in a body); a bare `raise` does not.
    """
    context, cause, suppress = error.__context__, error.__cause__, error.__suppress_context__
    try:
        raise error
    except BaseException:
        error.__context__, error.__cause__ = context, cause
        error.__suppress_context__ = suppress
        raise
