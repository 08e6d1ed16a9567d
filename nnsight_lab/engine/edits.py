"""Persistent edits: `with model.edit() as edited:` records interventions.

The edit block's body is not run when the block ends; it is kept, with the
variables it reads, and runs as an extra invoke over the whole batch at the
start of every later trace of the edited model (before the trace's own bodies,
so they see the edited values). `model.edit()` gives a shallow copy that
carries the edits (the original stays unedited); `inplace=True` edits the model
itself; `clear_edits()` removes them.

`with model.edit() as edited:` binds the model that carries the edits;
`with model.edit() as (tracer, edited):`, nnsight 0.8's form, binds the edit's
tracer and that model. Which one the statement wants is read from its bytecode
(it unpacks into two names or not), so neither form is a guess.
`with model.edit(inplace=True) as tracer:` binds the edit's tracer (the model
that carries the edits is `model` itself), as nnsight does.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..tracing import Body, CapturingContext, Namespace
from .backends import helpers
from .bytecode import unpacks_into
from .iteration import Iteration, Steps

if TYPE_CHECKING:
    from ..models.nnsight import NNsight


@dataclass
class Edit:
    """One recorded edit: its body and the variables it read when recorded."""

    body: Body
    values: dict[str, Any]
    scope: dict[str, Any]
    helpers: dict[str, Any]

    def fresh_namespace(self) -> Namespace:
        """A namespace for one run of the edit, so runs do not see each other's variables."""
        return Namespace(self.values, self.scope, self.helpers)


class Editor(CapturingContext):
    """The context of `with model.edit(inplace=False) as edited:`."""

    def __init__(self, model: NNsight, inplace: bool) -> None:
        self.inplace = inplace
        if inplace:
            self.model = model
        else:  # a shallow copy: the same modules and envoys, its own list of edits
            self.model = object.__new__(type(model))
            self.model.__dict__.update(model.__dict__)
            object.__setattr__(self.model, "_edits", list(model._edits))

    def entered(self) -> NNsight | Editor | tuple[Editor, NNsight]:
        frame = self._frame
        if frame is not None and unpacks_into(frame) == 2:
            return self, self.model
        return self if self.inplace else self.model

    @property
    def iter(self) -> Steps:
        """`tracer.iter[steps]` in the edit's body: apply it at those generation steps."""
        return Steps()

    def all(self) -> Iteration:
        """Every step: the same as `tracer.iter[:]`."""
        return Steps()[:]

    def run(self, body: Body, frame: FrameType) -> None:
        # Saving inside an edit keeps nothing: an edit's values stay with the edit.
        edit = Edit(body, dict(frame.f_locals), frame.f_globals, helpers(lambda value: value))
        self.model._edits.append(edit)
