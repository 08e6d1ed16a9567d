"""`envoy(x, hook=True)`: a module call that the running trace sees.

An envoy called in a body normally runs its module unseen by the trace (see
`Envoy.__call__`). With `hook=True` the call is routed: its modules offer their
values, so another body can read an attached adapter's `inner.output` that an
edit's body computed. Those values are offered while the model waits inside
one of its own module calls, so the bodies that wait on them are resumed from
the calling body, not from the model: for the call they hand control back to it.
"""

from __future__ import annotations

from typing import Any

from greenlet import getcurrent
from torch import nn


def call_watched(interleaver: Any, module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """`module(*args, **kwargs)` from a body, routed through `interleaver`'s trace.

    Args:
        interleaver: the running trace's interleaver.
        module: the module to call.
        args, kwargs: its input.

    Returns:
        What the module returned.
    """
    here = getcurrent()
    moved = []  # (greenlet, its parent before the call)
    for other in interleaver.mediators:
        held = other.greenlet
        if held is not None and held is not here and held.parent is not here:
            try:
                previous = held.parent
                held.parent = here  # it parks back into this call, not into the model
            except ValueError:  # `here` runs below it: it comes back here anyway
                continue
            moved.append((held, previous))
    location, value = interleaver.location, interleaver.value
    try:
        return module(*args, **kwargs)
    finally:
        interleaver.location, interleaver.value = location, value  # where the model waits
        for held, parent in moved:
            if held:  # a body that ended in the call has no parent to restore
                held.parent = parent
