"""Errors raised by nnsight_lab.

Every error says what went wrong, where (the user's line, through the traceback),
and what to do next::

    NNsightError                 base class: catch this to catch ours
     ├── TraceSourceError        the body of a `with` block could not be read or compiled
     ├── TracingError            the tracing API was used in the wrong place or way
     ├── OutOfOrderError         a value was asked for after the model had passed it
     └── NotReachedError         the model finished without reaching a requested point
    NNsightWarning               base class of our warnings
"""

from __future__ import annotations


class NNsightError(Exception):
    """Base class of every nnsight_lab error."""


class TraceSourceError(NNsightError):
    """The body of a `with model.trace(...)` block could not be read or compiled."""


class TracingError(NNsightError):
    """The tracing API was used in a place or a way it cannot work."""


class OutOfOrderError(NNsightError):
    """A module's value was requested after the forward pass had already passed it."""


class NotReachedError(NNsightError):
    """The forward pass ended without reaching a point the body was waiting for."""


class NNsightWarning(UserWarning):
    """Base class of nnsight_lab warnings."""
