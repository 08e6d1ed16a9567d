"""`ModuleTree`: a foldable tree of a wrapped model's modules, with activation statistics.

The widget gets a plain tree (name, access path, class, parameter count per node) and,
when values are given, a summary per module path (shape, statistics, histogram). The
browser folds repeated blocks (`h.0-11`), searches by name, and writes the clicked
node's access path to `selected`.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import anywidget
import traitlets

from ..engine.cache import Cache
from ..engine.envoy import Envoy
from .serialization import access_path, summary

_STATIC = pathlib.Path(__file__).parent / "static"


class ModuleTree(anywidget.AnyWidget):
    """The module tree of a wrapped model.

    Args:
        model: an `NNsight` / `LanguageModel` (or any envoy in it).
        cache: values to show per module: `tracer.cache()`, or a dict from module
            (envoy or path such as `"model.transformer.h.0"`) to its output.
        name: the model's variable name, for access paths (default: found in the
            caller's variables, else `"model"`).

    Example:
        >>> with llm.trace("Hello") as tracer:
        ...     cache = tracer.cache()
        >>> ModuleTree(llm, cache=cache)
    """

    _esm = _STATIC / "module_tree.js"
    tree = traitlets.Dict().tag(sync=True)
    stats = traitlets.Dict().tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    query = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self, model: Envoy, *, cache: Cache | Mapping | None = None, name: str | None = None
    ) -> None:
        if not isinstance(model, Envoy):
            raise TypeError(
                f"ModuleTree shows a wrapped model, got {type(model).__name__}: wrap it first, "
                "e.g. `ModuleTree(NNsight(module))`."
            )
        caller = sys._getframe(1)
        root = name or variable_name(model, caller.f_locals, caller.f_globals) or "model"
        super().__init__(tree=module_tree(model, root), stats=module_stats(model, cache, root))


def module_tree(envoy: Envoy, root: str) -> dict[str, Any]:
    """The plain tree of `envoy`: name, access path, class, parameter count, children."""
    module = envoy._module
    params = sum(p.numel() for p in module.parameters())  # shared weights counted once
    return {
        "name": envoy._path.rsplit(".", 1)[-1] if "." in envoy._path else root,
        "path": access_path(envoy._path, root),
        "cls": type(module).__name__,
        "params": params,
        "children": [module_tree(child, root) for child in envoy._children.values()],
    }


def module_stats(envoy: Envoy, values: Cache | Mapping | None, root: str) -> dict[str, Any]:
    """Summaries of the values per module, keyed by access path."""
    if values is None:
        return {}
    if isinstance(values, Cache):
        values = {path: entry.output for path, entry in values.entries.items()}
    elif not isinstance(values, Mapping):
        raise TypeError(
            f"cache must be `tracer.cache()` or a dict of module -> value, got "
            f"{type(values).__name__}"
        )
    stats = {}
    for key, value in values.items():
        path = key._path if isinstance(key, Envoy) else str(key)
        info = value if _is_summary(value) else summary(value)
        if info is not None:
            stats[access_path(path, root)] = info
    return stats


def variable_name(value: Any, *scopes: dict) -> str | None:
    """The name a variable of `scopes` (searched in order) holds `value` under, if any."""
    for scope in scopes:
        for key, candidate in scope.items():
            if candidate is value and not key.startswith("_"):
                return key
    return None


def _is_summary(value: Any) -> bool:
    return isinstance(value, dict) and "shape" in value and "dtype" in value
