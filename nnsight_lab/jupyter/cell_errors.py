"""How a `%%trace` cell's errors look: under the cell's own number, never the magic's frames.

An error of the body keeps its traceback, cut down to the user's frames (and
the model's, when the model raised it). An error that has no frame of the
cell's body is about the magic's line itself: no input, `remote` with no
server, an option the model does not take, a syntax error in the cell. Those
become one `UsageError` (IPython shows its message alone), which names the
cell's line when there is one.
"""

from __future__ import annotations

import re
import sys
import traceback
from types import FrameType, TracebackType
from typing import Any

from IPython.core.error import UsageError

from ..errors import NNsightError
from ..tracing.tracebacks import user_frames
from .cell_args import USAGE, CellArgs


def cell_number(shell: Any) -> int:
    """The `In[n]` of the running cell.

    IPython counts a cell before running it (`execution_count` is then n + 1 when
    it keeps history, n when not), so the number is read from the cell's own
    frame: the frame that called the magic was compiled under the cell's name.
    """
    names = getattr(shell.compile, "_filename_map", {})
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename in names:
            return int(names[frame.f_code.co_filename])
        frame = frame.f_back
    return int(shell.execution_count)


def shown(error: BaseException, args: CellArgs, line: str, cell_file: str) -> BaseException:
    """What the magic raises for `error`, raised while the cell ran as a body."""
    tb = user_frames(error.__traceback__)
    if not _reaches(tb, cell_file) and _about_the_line(error, tb, args):
        return UsageError(f"%%trace {line.strip()}: {_message(error)}\n{USAGE}")
    error.__traceback__ = tb
    return error


def syntax(error: SyntaxError, label: str) -> UsageError:
    """A syntax error in the cell as one message: the cell's label, line, text and caret."""
    text = (error.text or "").rstrip("\n")
    caret = " " * max((error.offset or 1) - 1 - (len(text) - len(text.lstrip())), 0) + "^"
    where = f"{label}, line {error.lineno}"
    return UsageError(f"{where}\n    {text.strip()}\n    {caret}\nSyntaxError: {error.msg}")


def _reaches(tb: TracebackType | None, cell_file: str) -> bool:
    return any(frame.f_code.co_filename == cell_file for frame, _ in traceback.walk_tb(tb))


def _about_the_line(error: BaseException, tb: TracebackType | None, args: CellArgs) -> bool:
    """An error of ours raised before any body line ran, or an option the model refused."""
    if isinstance(error, NNsightError) and tb is None:
        return True
    if isinstance(error, TypeError):
        found = re.search(r"unexpected keyword argument '(\w+)'", str(error))
        return found is not None and found.group(1) in args.kwargs
    return False


def _message(error: BaseException) -> str:
    if isinstance(error, TypeError):
        return f"an option the model does not take: {error}"
    return str(error)
