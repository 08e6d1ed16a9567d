"""`Mediator`: one invoke's body, run as a coroutine beside the model.

The body runs in its own greenlet. When it reads `module.output`, the mediator
names the location it needs (`"model.layer1.output.0"`: module path, kind, call
index); if the model is at that point now, the value is returned at once,
otherwise the greenlet parks and the interleaver resumes it when the model gets
there. No threads: a hand-off is one greenlet switch.
"""

from __future__ import annotations

import enum
from types import CodeType
from typing import TYPE_CHECKING, Any

from greenlet import GreenletExit, getcurrent, greenlet

from ..errors import OutOfOrderError, TracingError
from .batching import merge, narrow

if TYPE_CHECKING:
    from .interleaver import Interleaver


class State(enum.Enum):
    """Where a mediator is, seen from the interleaver."""

    NEW = "new"
    WAITING = "waiting"  # for `Mediator.location`
    AT_BARRIER = "at_barrier"
    AT_NAME = "at_name"  # waiting for another invoke to assign `Mediator.name`
    RELEASED = "released"  # from a barrier: ready to run at the current point
    DONE = "done"


class MediatorGreenlet(greenlet):
    """A greenlet that knows its mediator, so `.output` can find who is asking."""

    mediator: Mediator


class Mediator:
    """Runs one body (`code` in `namespace`) for rows `rows` of the batch.

    Args:
        code: the compiled body.
        namespace: the dict the body runs in.
        rows: `(start, stop)` of this invoke's rows, or None for the whole batch (also
            when its rows are the whole batch: then nothing needs cutting).
    """

    def __init__(self, code: CodeType, namespace: dict, rows: tuple[int, int] | None) -> None:
        self.code = code
        self.namespace = namespace
        self.rows = rows
        self.iteration = 0
        self.state = State.NEW
        self.location: str | None = None
        self.name: str | None = None
        self.error: BaseException | None = None
        self.interleaver: Interleaver | None = None
        self.greenlet: MediatorGreenlet | None = None

    # -- driven by the interleaver (model side) ------------------------------

    def start(self, interleaver: Interleaver) -> None:
        """Run the body until it first waits for the model (or finishes)."""
        self.interleaver = interleaver
        self.greenlet = MediatorGreenlet(self._main)
        self.greenlet.mediator = self
        self.greenlet.switch()

    def resume(self) -> None:
        """Let the body go on from where it waits, until it waits again or ends."""
        assert self.greenlet is not None
        self.greenlet.switch()

    def fail(self, error: BaseException) -> None:
        """Raise `error` where the body waits, so its traceback shows the user's line."""
        assert self.greenlet is not None
        self.greenlet.throw(error)

    def close(self) -> None:
        """End the body if it is still waiting; drop references to engine state."""
        if self.greenlet is not None and self.greenlet:
            self.greenlet.throw(GreenletExit)
        self.greenlet = None
        self.interleaver = None
        self.namespace = {}

    def _main(self) -> None:
        try:
            exec(self.code, self.namespace)
        except GreenletExit:
            pass
        except BaseException as error:  # reported to the model side, raised there
            self.error = error
        self.state = State.DONE

    # -- called from the body (mediator side) --------------------------------

    def get(self, path: str, kind: str) -> Any:
        """The value at `path.kind` of this mediator's current call, cut to its rows."""
        location = f"{path}.{kind}.{self.iteration}"
        interleaver = self.interleaver
        if interleaver.location != location:  # type: ignore[union-attr]
            self._wait(location, path, kind)
        value = interleaver.value  # type: ignore[union-attr]
        return value if self.rows is None else self.view(value)

    def set(self, path: str, kind: str, value: Any) -> None:
        """Replace this mediator's rows of the value at `path.kind`."""
        location = f"{path}.{kind}.{self.iteration}"
        interleaver = self.interleaver
        if interleaver.location != location:  # type: ignore[union-attr]
            self._wait(location, path, kind)
        interleaver.value = value if self.rows is None else self.merge(interleaver.value, value)  # type: ignore[union-attr]

    def view(self, value: Any) -> Any:
        """`value` cut to this mediator's rows."""
        if self.rows is None:
            return value
        return narrow(value, *self.rows, self.interleaver.batch_size)  # type: ignore[union-attr]

    def merge(self, full: Any, new: Any) -> Any:
        """`full` with this mediator's rows replaced by `new`."""
        if self.rows is None:
            return new
        return merge(full, *self.rows, self.interleaver.batch_size, new)  # type: ignore[union-attr]

    def park(self, state: State) -> None:
        """Hand control back to the model side until the interleaver resumes us."""
        self.state = state
        assert self.greenlet is not None and self.greenlet.parent is not None
        self.greenlet.parent.switch()

    def _wait(self, location: str, path: str, kind: str) -> None:
        interleaver = self.interleaver
        assert interleaver is not None
        if interleaver.passed(path, kind, self.iteration):
            raise OutOfOrderError(
                f"`{_access(path, kind)}` was read after the model had already run "
                f"`{_access(path, '')}`. A trace body runs alongside the forward pass, so "
                "it must read modules in the order the model runs them: move this line above "
                "the line that reads a later module."
            )
        self.location = location
        interleaver.expect(path, kind)
        try:
            self.park(State.WAITING)
        finally:
            interleaver.unexpect(path, kind)
            self.location = None


def current_mediator(what: str, kind: str = "") -> Mediator:
    """The mediator whose body is running now.

    Raises:
        TracingError: no body of a running trace is executing (`what` and `kind` name
            the access, as a module path and `output`/`input`/..., or a call).
    """
    mediator = getattr(getcurrent(), "mediator", None)
    if mediator is None:
        access = _access(what, kind) if kind else what
        raise TracingError(
            f"`{access}` can only be used inside a trace body: inside `with model.trace(input):`, "
            "or inside `with tracer.invoke(input):` when the trace has invokes."
        )
    return mediator


def _access(path: str, kind: str) -> str:
    """`model.transformer.h.0` + `output` -> `model.transformer.h[0].output`."""
    parts = []
    for part in path.split("."):
        parts.append(f"[{part}]" if part.isdigit() else f".{part}")
    return "".join(parts).lstrip(".") + (f".{kind}" if kind else "")
