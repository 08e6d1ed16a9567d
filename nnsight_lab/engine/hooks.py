"""Routing module calls through the interleaver, for one trace only.

Each module's `forward` is shadowed by an instance attribute that passes the
call to `Interleaver.call_module`; undoing restores exactly what was there
before (an instance `forward` set by accelerate, or none). Installed only while
a body waits on the model, removed in `finally`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from .interleaver import Interleaver

_MISSING = object()


def hook_modules(
    interleaver: Interleaver, modules: Iterable[tuple[str, nn.Module]]
) -> Callable[[], None]:
    """Route every call of `modules` (path, module) through `interleaver`; returns the undo."""
    saved = []
    try:
        for path, module in modules:
            state = module.__dict__
            saved.append((state, state.get("forward", _MISSING)))
            state["forward"] = _routed(interleaver, path, module.forward)
    except BaseException:
        _restore(saved)
        raise
    return lambda: _restore(saved)


def _routed(interleaver: Interleaver, path: str, forward: Callable) -> Callable:
    call_module = interleaver.call_module

    def routed_forward(*args, **kwargs):
        return call_module(path, forward, args, kwargs)

    routed_forward.__wrapped__ = forward  # type: ignore[attr-defined]
    return routed_forward


def _restore(saved: list) -> None:
    for state, previous in reversed(saved):
        if previous is _MISSING:
            state.pop("forward", None)
        else:
            state["forward"] = previous


def original_forward(module: nn.Module) -> Callable:
    """The module's forward as it is outside a trace (skipping our routing)."""
    forward = module.forward
    return getattr(forward, "__wrapped__", forward) if _is_routed(forward) else forward


def _is_routed(forward: Callable) -> bool:
    return getattr(forward, "__name__", "") == "routed_forward"
