"""`tensor.save()` where a trace body's rewrite does not reach: in a function the body
calls, and outside any trace.

Inside a body, `x.save()` is rewritten to `nnsight_lab.save(x)` (see
`tracing.rewrite`), so it works on any value. A function the body calls is not
rewritten, and neither is code outside a trace, where `h.save()` on a tensor would
be a bare `AttributeError: 'Tensor' object has no attribute 'save'`. nnsight puts a
`save` method on every object for that; nnsight_lab puts one on `torch.Tensor` only
(the values a trace reads), which saves inside a trace, as nnsight does, and outside
one raises an error that names the line and the fix (or, with nnsight imported too,
calls nnsight's: its traces work beside ours).
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from ..errors import TracingValueError
from ..tracing import save


def tensor_save(self: torch.Tensor) -> torch.Tensor:
    """Keep this tensor after the trace that is running (as `nnsight_lab.save(tensor)`).

    Raises:
        TracingValueError: no trace is running (a `ValueError`, as nnsight's).

    Example:
        >>> def last(envoy):
        ...     return envoy.output[:, -1].save()  # in a function a trace body calls
    """
    try:
        return save(self)
    except TracingValueError:
        pass  # raised again below, about `.save()` on a tensor
    other = getattr(super(torch.Tensor, self), "save", None)
    if other is not None:  # another library's, below ours (nnsight mounts one on `object`)
        return other()
    caller = sys._getframe(1)
    raise TracingValueError(
        f"{caller.f_code.co_filename}, line {caller.f_lineno}: `.save()` works only inside a "
        "`with model.trace(...):` block (or a function called from one); outside one, the "
        "tensor is already yours: use it without `.save()`, or move this line into the trace."
    )


def install() -> None:
    """Give `torch.Tensor` its `save` method (unless something else already did)."""
    current: Any = getattr(torch.Tensor, "save", None)
    if current is None:
        torch.Tensor.save = tensor_save  # type: ignore[attr-defined]
