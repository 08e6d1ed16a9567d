"""Submodules named like a value every envoy serves: BERT's `output`.

`.output`, `.input`, `.source`, `.path` ... mean the same on every envoy. A module
whose child is called `output` (every BERT-style encoder layer has one) keeps
`.output` as its forward output; the child is reached as `.E_output`, with its
path unchanged (`...attention.output`, as `named_modules()` lists it). Building a
tree warns once per module class that has such a child.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from contextvars import ContextVar
from typing import Any

from ..errors import MovedNameWarning

PREFIX = "E_"
WARNED: ContextVar[set[tuple[type, str]] | None] = ContextVar("WARNED", default=None)
"""While a tree is built: (module class, child name) already warned about."""


def attribute_of(envoy_class: type, name: str) -> str:
    """The attribute that child `name` is reached by on an envoy: `name`, or `E_<name>`
    where `name` is a value `envoy_class` (a data descriptor: a property) serves."""
    if not name.startswith("_") and inspect.isdatadescriptor(getattr(envoy_class, name, None)):
        return PREFIX + name
    return name


def warn_moved(envoy: Any, name: str, attribute: str) -> None:
    """Warn that child `name` of `envoy` is `.{attribute}`: only while a tree is built,
    once per module class (not for a replacement the user made through the attribute)."""
    warned, key = WARNED.get(), (type(envoy._module), name)
    if warned is None or key in warned:
        return
    warned.add(key)
    kind = type(envoy._module).__name__
    warnings.warn(
        f"`{envoy._path}` ({kind}) has a submodule named `{name}`, which names a value every "
        f"envoy already serves: `.{name}` stays that value, and the submodule is "
        f"`.{attribute}` (its path stays `{envoy._path}.{name}`), on every {kind} here.",
        MovedNameWarning,
        stacklevel=_outside_stacklevel(),
    )


def _outside_stacklevel() -> int:
    """The `stacklevel` that names the first caller outside nnsight_lab."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "nnsight_lab"
    ):
        frame, level = frame.f_back, level + 1
    return level
