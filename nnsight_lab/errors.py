"""Errors raised by nnsight_lab.

Every error says what went wrong, where (the user's line, through the traceback),
and what to do next::

    NNsightError                 base class: catch this to catch ours
     ├── TraceSourceError        the body of a `with` block could not be read or compiled
     ├── TracingError            the tracing API was used in the wrong place or way
     │    └── TracingValueError  ...where nnsight raises ValueError (also a ValueError)
     ├── OutOfOrderError         a value was asked for after the model had passed it
     ├── NotReachedError         the model finished without reaching a requested point
     └── RemoteError             a model server refused or failed a request
          ├── PolicyError        the body uses something a server does not allow (names the line)
          └── WireError          a value cannot travel between client and server
    NNsightWarning               base class of our warnings
     ├── NNsightDeprecationWarning  an nnsight spelling that still works, with its new name
     │                           (also a FutureWarning, as nnsight's: shown by default)
     ├── OutputIndexWarning      `block.output[0]` on a block that returns a tensor
     └── MovedNameWarning        a submodule named `output` (BERT's) is `.E_output`
"""

from __future__ import annotations


class NNsightError(Exception):
    """Base class of every nnsight_lab error."""


class TraceSourceError(NNsightError):
    """The body of a `with model.trace(...)` block could not be read or compiled."""


class TracingError(NNsightError):
    """The tracing API was used in a place or a way it cannot work."""


class SourceNotAvailable(TracingError):
    """`.source` of something with no Python source to rewrite: a forward or callee
    that is a builtin or compiled from a string, a call into a submodule (which has
    its own `.source`), an assignment (nothing is called), or a drill outside a trace."""


class TracingValueError(TracingError, ValueError):
    """A trace was built in a way nnsight refuses with `ValueError` (a trace with no
    input, an invoke inside an invoke), so `except ValueError` written for nnsight
    catches it too."""


class OutOfOrderError(NNsightError):
    """A module's value was requested after the forward pass had already passed it."""


class NotReachedError(NNsightError):
    """The forward pass ended without reaching a point the body was waiting for."""


class RemoteError(NNsightError):
    """A model server refused or could not run a request (the message says which and why).

    Attributes:
        request_id: the server's id of the request, when it has one.
    """

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class PolicyError(RemoteError):
    """A trace body uses something that a model server does not run for strangers.

    Attributes:
        filename, lineno: the user's line that broke the rule.
        rule: the rule, in a few words (e.g. "no imports").
    """

    def __init__(
        self, message: str, *, filename: str = "", lineno: int = 0, rule: str = ""
    ) -> None:
        super().__init__(message)
        self.filename, self.lineno, self.rule = filename, lineno, rule


class WireError(RemoteError):
    """A value cannot be sent to or received from a model server (not a plain value)."""


class NNsightWarning(UserWarning):
    """Base class of nnsight_lab warnings."""


class NNsightDeprecationWarning(NNsightWarning, FutureWarning):
    """An nnsight spelling that still works but has a newer name (the message gives it).

    A `FutureWarning` like nnsight's own, not a `DeprecationWarning`: Python hides
    those outside `__main__`, so users of a notebook or a helper module would never
    see it. Silence only these with
    `warnings.filterwarnings("ignore", category=nnsight_lab.NNsightDeprecationWarning)`.
    """


class OutputIndexWarning(NNsightWarning):
    """`block.output[0]` on a transformers decoder block that returns a tensor.

    Until transformers 5 a GPT-2 or Llama block returned a tuple whose first item was
    the hidden states; now it returns the hidden states `[batch, seq, hidden]` itself,
    so `[0]` is the first batch row. Read `block.output`.
    """


class MovedNameWarning(NNsightWarning):
    """A submodule is named like a value every envoy serves (`output`, `input`, ...).

    Every BERT-style encoder has a submodule called `output`. On its envoy `.output`
    stays the module's forward output; the submodule is reached as `.E_output` (its
    path stays `...output`). Silence with
    `warnings.filterwarnings("ignore", category=nnsight_lab.MovedNameWarning)`.
    """
