"""A model's `rename=` aliases on the wire, bound on the server for one request.

The client's model names its modules by aliases too (`NNsight(net, rename=...)`,
`LanguageModel(name, rename=...)`); a remote body may use them, so a request
carries the rename as `[key, [alias, ...]]` pairs (`encode`). A key is a module
path, or `{"class": "module.QualName"}` for a module class; the server finds that
class among its own model's modules (it imports nothing it was sent). The server
binds the aliases on its model's envoys while the request runs and removes them
after (`bound`), so they never outlive the request nor reach another one.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from ..engine.aliases import Rename, bind
from ..engine.envoy import Envoy
from ..errors import RemoteError, WireError

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_PART = re.compile(r"\*|[0-9]+|_?[A-Za-z0-9][A-Za-z0-9_]*")
MAX_ALIASES = 16  # per key
MAX_CHARS = 200  # per key or alias


def encode(rename: Rename | None) -> list[Any]:
    """The client's `rename=` as the request's `rename` pairs.

    Raises:
        RemoteError: an alias a remote body could not use (it starts with `_`), or a
            key that is neither a path nor a module class.
    """
    pairs: list[Any] = []
    for key, aliases in (rename or {}).items():
        if isinstance(key, type):
            wire_key: Any = {"class": f"{key.__module__}.{key.__qualname__}"}
        elif isinstance(key, str):
            wire_key = key
        else:
            raise RemoteError(
                f"`rename` key {key!r} is neither a module path nor a module class, so it "
                "cannot travel to a model server: key it by path or by class."
            )
        names = [aliases] if isinstance(aliases, str) else list(aliases)
        for alias in names:
            if any(part.startswith("_") for part in str(alias).split(".")):
                raise RemoteError(
                    f"`rename` alias {alias!r} starts with '_', and a remote body cannot read "
                    "such names (the server's policy refuses them): pick another alias."
                )
        pairs.append([wire_key, names])
    return pairs


@contextlib.contextmanager
def bound(model: Envoy, pairs: Any) -> Iterator[None]:
    """`model` with the request's aliases bound on its envoys, removed at the end.

    Raises:
        WireError: `pairs` is not a rename (malformed, too long, an alias starting
            with `_`).
    """
    rename = decode(pairs, model)
    if not rename:
        yield
        return
    envoys = _bottom_up(model)
    before = [(envoy, set(envoy.__dict__)) for envoy in envoys]
    try:
        for envoy in envoys:  # as building the tree binds: children first
            bind(envoy, rename)
        yield
    finally:
        for envoy, names in before:
            for name in set(envoy.__dict__) - names:
                del envoy.__dict__[name]


def decode(pairs: Any, model: Envoy) -> dict[Any, list[str]]:
    """The rename that `pairs` stands for, its class keys found in `model`'s modules."""
    if not isinstance(pairs, list):
        raise WireError("a request's `rename` must be a list of [key, aliases] pairs")
    classes: dict[str, type] | None = None
    rename: dict[Any, list[str]] = {}
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], list)):
            raise WireError(f"a `rename` entry must be [key, [aliases]], got {pair!r:.80}")
        key, aliases = pair
        if not 1 <= len(aliases) <= MAX_ALIASES or not all(_alias(a) for a in aliases):
            raise WireError(
                f"`rename` aliases {aliases!r:.80} must be 1 to {MAX_ALIASES} dotted names, "
                "none of them starting with '_'"
            )
        if isinstance(key, dict) and set(key) == {"class"} and isinstance(key["class"], str):
            classes = _classes(model) if classes is None else classes
            found = classes.get(key["class"])
            if found is not None:  # a class the model lacks names no module: as locally
                rename[found] = list(aliases)
        elif isinstance(key, str) and _path(key):
            rename[key] = list(aliases)
        else:
            raise WireError(f"`rename` key {key!r:.80} is not a module path nor a class")
    return rename


def _alias(alias: Any) -> bool:
    return (
        isinstance(alias, str)
        and len(alias) <= MAX_CHARS
        and all(_NAME.fullmatch(p) for p in alias.split("."))
    )


def _path(key: str) -> bool:
    parts = key.strip(".").split(".")
    return len(key) <= MAX_CHARS and all(_PART.fullmatch(p) for p in parts)


def _classes(model: Envoy) -> dict[str, type]:
    """The classes of `model`'s modules (and their bases), by qualified name."""
    found: dict[str, type] = {}
    for module in model._module.modules():
        for cls in type(module).__mro__:
            found.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
    return found


def _bottom_up(model: Envoy) -> list[Envoy]:
    """Every envoy of the tree once, each after its children (the order `Envoy.__init__`
    binds in: a module two paths reach is bound at its first one)."""
    order: list[Envoy] = []
    seen: set[int] = set()

    def visit(envoy: Envoy) -> None:
        seen.add(id(envoy))
        for child in envoy._children.values():
            if id(child) not in seen:
                visit(child)
        order.append(envoy)

    visit(model)
    return order
