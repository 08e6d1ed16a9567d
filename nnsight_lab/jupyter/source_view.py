"""`SourceView`: a module's forward source with each operation's name beside its line.

The widget gets the listing as plain rows (line number, text, operation names); a
click on a name writes the code that reads it (`llm.transformer.h[0].attn.source.
self_c_attn_0.output`) to `selected` and the clipboard.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import anywidget
import traitlets

from ..engine.envoy import Envoy
from ..engine.source import SourceView as Listing
from ..engine.source.probe import is_sourced, module_source
from ..models.nnsight import NNsight
from .serialization import access_path

_STATIC = pathlib.Path(__file__).parent / "static"


class SourceView(anywidget.AnyWidget):
    """The `.source` listing of a module, as a widget.

    Args:
        module: an envoy (`llm.transformer.h[0].attn`) or a `.source` listing.
        name: the model's variable name, for the copied code (default: found in the
            caller's variables, else `"model"`).

    Example:
        >>> SourceView(llm.transformer.h[0].attn)
    """

    _esm = _STATIC / "source_view.js"
    module_path = traitlets.Unicode("").tag(sync=True)
    lines = traitlets.List(traitlets.Dict()).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)

    def __init__(self, module: Envoy | Listing, *, name: str | None = None) -> None:
        if isinstance(module, Envoy):
            listing = module.source
        elif isinstance(module, Listing):
            listing = module
        else:
            raise TypeError(
                f"SourceView shows the forward of a module, got {type(module).__name__}: pass "
                "a module of a wrapped model, e.g. `SourceView(llm.transformer.h[0].attn)`."
            )
        caller = sys._getframe(1)
        root = name or model_name(listing, caller.f_locals, caller.f_globals) or "model"
        super().__init__(module_path=_owner_path(listing, root), lines=listing_rows(listing))


def listing_rows(listing: Listing) -> list[dict[str, Any]]:
    """One row per source line: its number (from the `def` line, `*` for decorators),
    its text and the operations called on it, in execution order."""
    compiled = listing._compiled
    on_row: dict[int, list[str]] = {}
    for op in compiled.names:
        on_row.setdefault(compiled.rows[op], []).append(op)
    return [
        {
            "number": "*" if row < compiled.def_row else str(row - compiled.def_row),
            "text": text,
            "ops": on_row.get(row, []),
        }
        for row, text in enumerate(compiled.lines)
    ]


def _owner_path(listing: Listing, root: str) -> str:
    # An operation's path holds ".source." (`model.h.0.attn.source.attention_interface_0`).
    module, _, operation = listing._owner.partition(".source.")
    path = access_path(module, root)
    return f"{path}.source.{operation}.source" if operation else path


def model_name(listing: Listing, *scopes: dict) -> str | None:
    """The name under which `scopes` (searched in order) hold the wrapped model whose
    module `listing` belongs to, if any."""
    owner = listing._scope.root
    for scope in scopes:
        for key, value in scope.items():
            if isinstance(value, NNsight) and not key.startswith("_"):
                envoy = _envoy_at(value, owner.path)
                if envoy is not None and is_sourced(envoy._module):
                    if module_source(envoy._module, owner.path) is owner:
                        return key
    return None


def _envoy_at(model: NNsight, path: str) -> Envoy | None:
    envoy: Envoy | None = model
    for part in path.split(".")[1:]:
        envoy = envoy._children.get(part) if envoy is not None else None
    return envoy
