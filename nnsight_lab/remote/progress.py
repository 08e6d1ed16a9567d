"""One line that shows where a remote request stands, updated in place.

In a notebook the line is a display updated through its display id; in a
terminal it is rewritten with a carriage return on stderr. Nothing is shown
when `CONFIG.APP.REMOTE_LOGGING` is False.
"""

from __future__ import annotations

import sys
from typing import Any

from ..config import CONFIG
from .schema import State, Status


def text_of(status: Status) -> str:
    """The line for a status: `[abc123] queued (2 ahead)`, `[abc123] running`."""
    words = status.state.value
    if status.state is State.QUEUED and status.position is not None:
        words += f" ({status.position} ahead)" if status.position else " (next)"
    if status.message and status.message != status.state.value and status.state is not State.QUEUED:
        words += f": {status.message}"
    return f"[{status.id[:8]}] {words}"


class StatusLine:
    """Shows successive statuses of one request on one line."""

    def __init__(self) -> None:
        self.enabled = CONFIG.APP.REMOTE_LOGGING
        self.handle: Any = None
        self.last = ""
        self.notebook = _in_notebook()

    def show(self, status: Status) -> None:
        text = text_of(status)
        if not self.enabled or text == self.last:
            return
        if self.notebook:
            self._show_in_notebook(text)
        else:
            padding = " " * max(len(self.last) - len(text), 0)
            sys.stderr.write(f"\r{text}{padding}")
            sys.stderr.flush()
        self.last = text

    def close(self) -> None:
        """End the line (a terminal gets its newline)."""
        if self.enabled and self.last and not self.notebook:
            sys.stderr.write("\n")
            sys.stderr.flush()
        self.last = ""

    def _show_in_notebook(self, text: str) -> None:
        from IPython.display import display

        if self.handle is None:
            self.handle = display({"text/plain": text}, raw=True, display_id=True)
        else:
            self.handle.update({"text/plain": text}, raw=True)


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (not a terminal IPython or a script)."""
    shell_module = sys.modules.get("IPython")
    if shell_module is None:
        return False
    shell = shell_module.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
