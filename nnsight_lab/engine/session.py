"""`with model.session():` several traces whose values flow from one to the next.

A session is a capturing context like a trace: its body (which opens traces of
its own) is read and run by the session, in a namespace of its own. Inside it, a
trace hands back every variable its body assigned, saved or not, so a later trace
of the session can use it; only what was saved leaves the session. On a model
server the whole session is one request, and values that are not saved never
travel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..tracing import Body, Namespace, SavingContext
from .backends import HELPERS

if TYPE_CHECKING:
    from ..models.nnsight import NNsight


class Session(SavingContext):
    """The context of `with model.session() as session:`.

    Attributes:
        model: the model whose traces the body runs.
        backend: what runs the body (None: here; a remote backend sends it whole).
    """

    def __init__(
        self, model: NNsight, backend: Callable[[Session], dict[str, Any]] | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.backend = backend
        self.scope: tuple[dict, dict] | None = None
        self.inputs: tuple = ()  # a session has no input of its own (its traces do),
        self.kwargs: dict[str, Any] = {}  # but a request is built from any context alike

    def execute(self, body: Body, caller_locals: dict, caller_globals: dict) -> dict[str, Any]:
        """Run `body` reading the caller's variables; returns what it saved, by name."""
        self.body, self.scope = body, (caller_locals, caller_globals)
        self.activate()
        try:
            return (self.backend or run_here)(self)
        finally:
            self.deactivate()
            self.scope = None

    def saved_from(self, namespace: dict) -> dict[str, Any]:
        return self.saved_in(namespace)


def run_here(session: Session) -> dict[str, Any]:
    """Run the session's body in this process (its traces run on the model here)."""
    assert session.body is not None and session.scope is not None
    namespace = Namespace(*session.scope, HELPERS)
    exec(session.body.code, namespace)
    return session.saved_from(namespace)
