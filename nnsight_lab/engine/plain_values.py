"""`plain(value)`: whether a value a stepped body reads can run none of the user's code.

A stepped body (see `tracing.stepped`) reads a module's value only where it writes
`.output` itself; a method, a property or an operator of the user's own object
(`probe.value`, `helper.get(model.layer1)`, `store[model.layer1]`) may read one
where no `yield` can reach, and then the body would have to wait where it cannot.
So a body steps only when every variable it reads from the caller holds a value whose
behaviour is the engine's or a numeric library's: a tensor, a number, a string, a
container of those, torch / math / numpy / einops, nnsight_lab's own objects (the
model, its envoys, a tracer). Anything else runs the body in a greenlet, which
handles every body: only the speed differs.
"""

from __future__ import annotations

import itertools
import types
from typing import Any

import torch

_SCALARS: frozenset[type] = frozenset(
    {
        int,
        float,
        complex,
        bool,
        str,
        bytes,
        type(None),
        type(Ellipsis),
        slice,
        range,
        torch.dtype,
        torch.device,
        torch.Size,
        torch.layout,
        torch.memory_format,
    }
)
_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})
# Packages whose objects, functions and modules run no user code that reads a trace.
_PACKAGES = frozenset({"torch", "math", "numpy", "einops", "nnsight_lab", "transformers"})
_SAMPLE = 32  # values checked in all (a list of prompts: its first strings tell)
_FUNCTIONS = (types.BuiltinFunctionType, types.FunctionType, types.MethodType)
# By type, for values judged by their type alone (True: plain); filled as types are met
# (`can_step` reads it first: one dict lookup for the usual values).
BY_TYPE: dict[type, bool] = dict.fromkeys(_SCALARS, True)


def plain(value: Any) -> bool:
    """Whether `value` (and what it holds) is a tensor, a number, a string, a container of
    those, or an object, function or module of torch, numpy, math, einops, transformers
    or nnsight_lab. A subclass of one of those defined elsewhere is not plain. Of a
    container, the first values (breadth first, `_SAMPLE` in all) are checked."""
    known = BY_TYPE.get(type(value))
    if known is not None:  # the usual case: the model, a tensor, a number
        return known
    queue = [value]
    for item in queue:  # breadth first; the queue never grows past `_SAMPLE`
        kind = type(item)
        known = BY_TYPE.get(kind)
        if known is not None:
            if not known:
                return False
        elif kind in _CONTAINERS:
            room = _SAMPLE - len(queue)
            if room > 0:
                items = itertools.chain(item.keys(), item.values()) if kind is dict else item
                queue.extend(itertools.islice(items, room))
        elif not _plain_object(item, kind):
            return False
    return True


def _plain_object(value: Any, kind: type) -> bool:
    if isinstance(value, types.ModuleType):
        return value.__name__.partition(".")[0] in _PACKAGES
    if isinstance(value, _FUNCTIONS):
        if kind is types.BuiltinFunctionType and value.__module__ in (None, "builtins"):
            return True  # C code (a builtin, or a method of a plain object)
        owner = value.__module__ or ""
        return owner.partition(".")[0] in _PACKAGES
    judged = (kind.__module__ or "").partition(".")[0] in _PACKAGES
    BY_TYPE[kind] = judged  # a class's module does not change
    return judged
