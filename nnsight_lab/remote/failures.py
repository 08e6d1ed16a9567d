"""A server's `Failure` raised on the client as the exception the user would have had here.

The exception gets the same type when it is a builtin exception or one of
nnsight_lab's errors (anything else becomes a `RemoteError` naming the type),
and a traceback that ends at the user's own line: the raise runs in code
compiled under the user's file name at that line, so tracebacks, notebooks and
debuggers show the line of the user's file or cell.
"""

from __future__ import annotations

import builtins
import sys
import warnings
from typing import Any

from .. import errors
from ..errors import PolicyError, RemoteError
from .schema import Failure, Status


def exception_of(failure: Failure, request_id: str | None = None) -> BaseException:
    """The exception that `failure` describes (not raised)."""
    kind = _known_type(failure)
    if kind is PolicyError:
        line = failure.frames[-1] if failure.frames else None
        message = failure.message
        if line is not None:  # a notebook cell's file is shown as the cell, as IPython does
            message = message.replace(line.filename, _shown(line.filename), 1)
        return PolicyError(
            message,
            filename=line.filename if line else "",
            lineno=line.lineno if line else 0,
            rule=failure.rule or "",
        )
    if kind is None:
        return RemoteError(f"{failure.type}: {failure.message}", request_id)
    if issubclass(kind, RemoteError):  # the server's own: a timeout, a crashed worker, ...
        return kind(failure.message, request_id)
    try:
        return kind(failure.message)
    except Exception:  # a type whose constructor wants other arguments
        return RemoteError(f"{failure.type}: {failure.message}", request_id)


def raise_failure(failure: Failure, request_id: str | None = None) -> None:
    """Raise `failure` with a traceback at the user's line (its innermost frame)."""
    error = exception_of(failure, request_id)
    if not failure.frames:
        raise error
    frame = failure.frames[-1]
    padding = "\n" * (max(frame.lineno, 1) - 1)
    code = compile(padding + "raise __nnsight_remote_error__", frame.filename, "exec")
    try:
        exec(code, {"__nnsight_remote_error__": error})
    except BaseException as raised:
        raised.__traceback__ = raised.__traceback__.tb_next if raised.__traceback__ else None
        raise raised from None


def replay(status: Status) -> None:
    """Show here what the body printed and warned on the server, the warnings at the
    user's lines (a `UserWarning` stands in for a category not known here)."""
    if status.prints:
        sys.stdout.write(status.prints)
    for notice in status.warnings:
        kind = _known_type(notice, Warning) or UserWarning
        line = notice.frames[-1] if notice.frames else None
        if line is None:
            warnings.warn(notice.message, kind, stacklevel=2)
        else:
            warnings.warn_explicit(notice.message, kind, line.filename, line.lineno)


def _shown(filename: str) -> str:
    """`Cell In[n]` for the file IPython compiled cell n under; other files as they are."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    cells = getattr(getattr(shell, "compile", None), "_filename_map", None) or {}
    number = cells.get(filename)
    return filename if number is None else f"Cell In[{number}]"


def _known_type(failure: Failure, base: type = Exception) -> Any:
    """The class named by the failure, among builtins and nnsight_lab's errors only."""
    if failure.module == "builtins":
        kind = getattr(builtins, failure.type, None)
    elif failure.module == "nnsight_lab.errors":
        kind = getattr(errors, failure.type, None)
    else:
        return None
    if isinstance(kind, type) and issubclass(kind, base):
        return kind
    return None
