"""An envoy's repr: the module's torch repr, with the names the envoy adds.

Children show as torch shows them, labelled `alias/name` when `rename` gave
them aliases; an alias naming a module further down (`first_mlp` for
`layers.0.mlp`) gets a line of its own, and so does every `eproperty` with a
description. A module class with a `__repr__` of its own keeps it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .eproperty import eproperty

_TORCH_REPRS = (nn.Module.__repr__, nn.ModuleList.__repr__)


def envoy_repr(envoy: Any) -> str:
    """The repr of `envoy` (see the module docstring)."""
    module = envoy._module
    if type(module).__repr__ not in _TORCH_REPRS:
        return repr(module)
    if isinstance(module, nn.ModuleList):
        return _list_repr(envoy)
    children = envoy._children
    direct: dict[int, list[str]] = {}
    mounts: list[tuple[str, Any]] = []
    for name, value in envoy.__dict__.items():
        if name.startswith("_") or name in children or "_children" not in vars(value):
            continue
        if any(value is child for child in children.values()):
            direct.setdefault(id(value), []).append(name)
        else:
            mounts.append((name, value))
    lines = [
        f"({'/'.join([*direct.get(id(c), []), n])}): {_indent(repr(c))}"
        for n, c in children.items()
    ]
    lines += [f"({name}): {_indent(repr(value))}" for name, value in mounts]
    described = described_eproperties(type(envoy))
    extra = module.extra_repr().split("\n") if module.extra_repr() else []
    text = module._get_name() + "("
    if len(extra) == 1 and not lines and not described:
        return text + extra[0] + ")"
    if extra or lines or described:
        text += "\n  " + "\n  ".join(extra + lines + described) + "\n"
    return text + ")"


def described_eproperties(cls: type) -> list[str]:
    """One line per `eproperty` of `cls` that has a description."""
    found: dict[str, str] = {}
    for klass in cls.__mro__:
        for value in vars(klass).values():
            if isinstance(value, eproperty) and value.description is not None:
                found.setdefault(value.name, str(value))
    return list(found.values())


def _list_repr(envoy: Any) -> str:
    reprs = [repr(child) for child in envoy._children.values()]
    name = envoy._module._get_name()
    if not reprs:
        return name + "()"
    runs: list[list[Any]] = []  # [start, end, repr] of equal neighbours
    for index, text in enumerate(reprs):
        if runs and runs[-1][2] == text:
            runs[-1][1] = index
        else:
            runs.append([index, index, text])
    lines = [
        _indent(f"({a}): {t}" if a == b else f"({a}-{b}): {b - a + 1} x {t}") for a, b, t in runs
    ]
    return name + "(\n  " + "\n  ".join(lines) + "\n)"


def _indent(text: str) -> str:
    first, *rest = text.split("\n")
    return "\n".join([first, *("  " + line for line in rest)])
