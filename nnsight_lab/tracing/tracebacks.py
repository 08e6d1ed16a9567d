"""Tracebacks that show the user's lines, not the engine's."""

from __future__ import annotations

import os
from types import TracebackType

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
