"""`Mediator`: one invoke's body, run as a coroutine beside the model.

The body runs in its own greenlet. When it reads `module.output`, the mediator
names the location it needs (`"model.layer1.output.0"`: module path, kind, call
index); if the model is at that point now, the value is returned at once,
otherwise the greenlet parks and the interleaver resumes it when the model gets
there. No threads: a hand-off is one greenlet switch.
"""

from __future__ import annotations

import enum
import threading
import warnings
from types import CodeType
from typing import TYPE_CHECKING, Any

from greenlet import GreenletExit, getcurrent, greenlet

from ..errors import NNsightWarning, NotReachedError, OutOfOrderError, TracingError
from .batching import merge, narrow, skip_rows
from .greenlet_stack import run_deep

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


# An Enum member read (`State.DONE`) costs about 0.1 us in Python 3.11, four times a plain
# class attribute: the hot paths, which test states per mediator per module, use these.
NEW, WAITING, AT_BARRIER, AT_NAME, RELEASED, DONE = State


class IterationOver(BaseException):
    """Thrown into a body that waits for a step the model will never run: the open
    `tracer.iter` ends there, and so does the body (nothing tells it no step follows).

    On its way out it gathers, from each loop it leaves (`left`, innermost first), what
    the warning names: the step and line of the innermost loop if it was bounded (it
    was cut short: an unbounded one ends this way by design), and the line after the
    outermost one that has a line after it (which did not run).
    """

    def __init__(self, location: str | None = None) -> None:
        super().__init__(location)
        self.location = location  # what the body waited for
        self.cut_short: tuple[int, int] | None = None  # (line, step) of a bounded loop
        self.after: int | None = None
        self.loops = 0

    def left(self, line: int, step: int, bounded: bool, after: int | None) -> None:
        if self.loops == 0 and bounded:
            self.cut_short = (line, step)
        self.loops += 1
        if after is not None:
            self.after = after


class BarrierError(NotReachedError, ValueError):
    """A barrier that fewer invokes reached than its count (also a `ValueError`, which
    nnsight raises there)."""


class Stopped(BaseException):
    """Raised in a body by `tracer.stop()`: the body ends there, keeping what it saved,
    and the interleaver ends the forward pass (not an `Exception`: the body's own
    `except Exception` must not catch it and go on)."""


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
        deferred: run after the model returned (an empty invoke after generation).
    """

    def __init__(
        self,
        code: CodeType,
        namespace: dict,
        rows: tuple[int, int] | None,
        *,
        deferred: bool = False,
    ) -> None:
        self.code = code
        self.namespace = namespace
        self.rows = rows
        if deferred:
            self.deferred = True

    # Defaults of the state a run changes (class attributes: set per mediator only when
    # they change, which a trace's setup does not pay for).
    deferred = False  # runs after the model, reading only what it returned
    iteration = 0  # the call (step) of every module this body reads now
    iterating = 0  # how many `tracer.iter` blocks are open around the body's code
    failing: BaseException | None = None  # what `fail` is raising in the body
    waits = 0  # how many times the body has waited for the model
    generating = False  # steps are generation steps (calls of the root module)
    state: State = NEW
    location: str | None = None
    name: str | None = None
    error: BaseException | None = None
    interleaver: Interleaver | None = None
    greenlet: MediatorGreenlet | None = None

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
        self.failing = error
        try:
            self.greenlet.throw(error)
        finally:
            self.failing = None

    def close(self) -> None:
        """End the body if it is still waiting; drop references to engine state."""
        if self.greenlet is not None and self.greenlet:
            self.greenlet.throw(GreenletExit)
        self.greenlet = None
        self.interleaver = None
        self.namespace = {}

    def _main(self) -> None:
        try:
            run_deep(self.code, self.namespace)  # not `exec`: see `greenlet_stack`
        except (GreenletExit, Stopped):
            pass
        except IterationOver as over:
            warn_iteration_over(over, self.code.co_filename)
        except BaseException as error:  # reported to the model side, raised there
            self.error = error
        self.state = DONE

    # -- called from the body (mediator side) --------------------------------

    def get(self, path: str, kind: str) -> Any:
        """The value at `path.kind` of this mediator's current call, cut to its rows."""
        if self.deferred:
            return self._returned(path, kind)
        value = self._arrive(path, kind).value
        return value if self.rows is None else self.view(value)

    def set(self, path: str, kind: str, value: Any) -> None:
        """Replace this mediator's rows of the value at `path.kind`."""
        interleaver = self._arrive(path, kind)
        interleaver.value = value if self.rows is None else self.merge(interleaver.value, value)

    def skip(self, path: str, value: Any) -> None:
        """Do not run the module at `path` in this call; use `value` as its output."""
        interleaver = self._arrive(path, "input")
        if self.rows is None:
            interleaver.skips[path] = value
        else:  # for this invoke's rows only (see `RowSkips`)
            skip_rows(interleaver.skips, path, self.rows, interleaver.batch_size, value)

    def _returned(self, path: str, kind: str) -> Any:
        """For a deferred body: the model's result, the one value left after it ran."""
        if kind == "output" and (path == "model" or path.endswith(".generator")):
            return self.interleaver.result  # type: ignore[union-attr]
        raise NotReachedError(
            f"`{_access(path, kind)}` cannot be read in this invoke: it runs after the model "
            "has finished, when only `model.output` (what the model returned) is left. Read "
            "other modules in the invoke that runs alongside the model."
        )

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

    def _arrive(self, path: str, kind: str) -> Interleaver:
        """Wait (unless the model is there now) until the model reaches `path.kind`."""
        location = f"{path}.{kind}.{self.iteration}"
        interleaver = self.interleaver
        assert interleaver is not None
        if interleaver.location != location:
            self._wait(location, path, kind)
        return interleaver

    def _wait(self, location: str, path: str, kind: str) -> None:
        interleaver = self.interleaver
        assert interleaver is not None
        if interleaver.passed(path, kind, self.iteration):
            raise out_of_order(path, kind)
        self.location = location
        self.waits += 1
        interleaver.expect(path, kind)
        try:
            self.park(WAITING)
        finally:
            interleaver.unexpect(path, kind)
            self.location = None


def warn_iteration_over(over: IterationOver, filename: str) -> None:
    """Warn that a bounded `tracer.iter` was cut short (naming its line), or else that
    the line after an unbounded one did not run (naming that line)."""
    after = f"; line {over.after} (after the loop) did not run" if over.after else ""
    if over.cut_short is not None:
        line, step = over.cut_short
        path, kind, _ = (over.location or "model.input.0").rsplit(".", 2)
        waited = "start" if (path, kind) == ("model", "input") else f"`{_access(path, kind)}`"
        warnings.warn_explicit(
            f"step {step} of this `tracer.iter[...]` was never reached: the model finished "
            f"before the {waited} of step {step}, so the loop was cut short (what it saved in "
            f"earlier steps is kept{after}). A one-pass trace has one step (0); a generation "
            "has one per new token: ask for fewer steps, or generate more "
            "(`max_new_tokens=`, `min_new_tokens=`).",
            NNsightWarning,
            filename,
            line,
        )
    elif over.after is not None:
        warnings.warn_explicit(
            f"line {over.after} did not run: `tracer.iter[...]` (or `tracer.all()`) waits for "
            "steps until the model stops, so code after it in the same invoke never runs. "
            "Move that code into a separate `with tracer.invoke():` after this one; it runs "
            "once generation is over.",
            NNsightWarning,
            filename,
            over.after,
        )


def out_of_order(path: str, kind: str) -> OutOfOrderError:
    """The error for reading `path.kind` after the model has run it."""
    return OutOfOrderError(
        f"`{_access(path, kind)}` was read after the model had already run "
        f"`{_access(path, '')}`. A trace body runs alongside the forward pass, so "
        "it must read modules in the order the model runs them: move this line above "
        "the line that reads a later module."
    )


class _Stepping(threading.local):
    """This thread's mediators whose bodies run as generators now, innermost last (see
    `stepped_mediator`): such a body runs in the greenlet of whoever resumes it, so that
    greenlet does not tell who asks."""

    def __init__(self) -> None:
        self.mediators: list[Mediator] = []


stepping = _Stepping()


def current_mediator(what: str, kind: str = "", optional: bool = False) -> Any:
    """The mediator whose body is running now (None if `optional` and there is none).

    Raises:
        TracingError: no body of a running trace is executing (`what` and `kind` name
            the access, as a module path and `output`/`input`/..., or a call).
    """
    running = stepping.mediators
    mediator = running[-1] if running else getattr(getcurrent(), "mediator", None)
    if mediator is None and not optional:
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
