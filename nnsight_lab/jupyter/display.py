"""Rich displays in a notebook: a wrapped model shows as its module tree, a `.source`
listing as a source view. Registered with IPython's formatters by `%load_ext
nnsight_lab`, so the engine itself knows nothing of widgets.
"""

from __future__ import annotations

from typing import Any

from ..engine.source import SourceView as Listing
from ..models.nnsight import NNsight
from . import activations
from .module_tree import ModuleTree, variable_name
from .source_view import SourceView, model_name


def register(shell: Any) -> None:
    """Show wrapped models and `.source` listings as widgets in `shell`."""
    formatter = shell.display_formatter.mimebundle_formatter
    formatter.for_type(NNsight, lambda model, include=None, exclude=None: _model(shell, model))
    formatter.for_type(
        Listing, lambda listing, include=None, exclude=None: _listing(shell, listing)
    )


def _model(shell: Any, model: NNsight) -> dict:
    name = variable_name(model, shell.user_ns) or "model"
    tree = ModuleTree(model, cache=activations.latest(model), name=name)
    return _bundle(tree, repr(model))


def _listing(shell: Any, listing: Listing) -> dict:
    view = SourceView(listing, name=model_name(listing, shell.user_ns) or "model")
    return _bundle(view, str(listing))


def _bundle(widget: Any, text: str) -> dict:
    """The widget's bundle, with the plain text kept for consoles and saved notebooks."""
    bundle = widget._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    return {**data, "text/plain": text}
