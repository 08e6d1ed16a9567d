"""`tracer.iter[...]`: run part of a body once per step (per call of the modules).

A module called several times in one run (every generation step, a block used
twice per forward) has one location per call: `model.lm_head.output.0`, `.1`, ...
A body reads the call given by its mediator's `iteration` (0 unless inside an
iteration). `with tracer.iter[1:3] as step:` runs its body for steps 1 and 2
with `iteration` set to the step (and `step` bound to it as an int); `for step
in tracer.iter[...]:` does the same for a loop. An unbounded iteration (`[:]`,
`tracer.all()`) ends when the model stops: the body waiting for the next step
is ended (see `Mediator`), and a warning names the first line that did not run.
A bounded one whose steps the model does not all run (`iter[5]` in a 3-token
generation, `iter[0:3]` in a one-pass trace) ends the same way, and a warning
names its line: that step was never reached.
"""

from __future__ import annotations

import itertools
import sys
import warnings
from collections.abc import Iterator
from types import FrameType

from ..errors import NNsightWarning, TracingError
from ..tracing import Body, CapturingContext
from ..tracing.source import statement_after
from .mediator import IterationOver, Mediator, current_mediator


class Steps:
    """`tracer.iter`: index it with a step or a slice of steps."""

    def __getitem__(self, selector: int | slice) -> Iteration:
        if isinstance(selector, int):
            if selector < 0:
                raise TracingError("tracer.iter[...] takes steps counted from 0; got a negative")
            return Iteration(slice(selector, selector + 1))
        if isinstance(selector, slice):
            if any(v is not None and v < 0 for v in (selector.start, selector.stop)):
                raise TracingError("tracer.iter[...] takes steps counted from 0; got a negative")
            if selector.step is not None and selector.step < 1:
                raise TracingError("tracer.iter[a:b:s] needs a positive s")
            return Iteration(selector)
        raise TracingError(
            f"tracer.iter[...] takes an int or a slice (iter[0], iter[1:3], iter[:]), "
            f"got {type(selector).__name__}"
        )


class Iteration(CapturingContext):
    """One `tracer.iter[...]`, used as `with ... as step:` or `for step in ...:`."""

    def __init__(self, steps: slice) -> None:
        self.steps = steps

    def indices(self) -> Iterator[int]:
        start, stop, step = self.steps.start or 0, self.steps.stop, self.steps.step or 1
        return iter(range(start, stop, step)) if stop is not None else itertools.count(start, step)

    def run(self, body: Body, frame: FrameType) -> None:
        mediator = current_mediator("tracer.iter")
        namespace = frame.f_globals
        with _iterating(mediator, self, body.lineno, body.after):
            for index in self.indices():
                _begin_step(mediator, index)
                if body.target is not None:
                    namespace[body.target] = index
                waits = mediator.waits
                exec(body.code, namespace)
                if self.steps.stop is None and not mediator.generating and mediator.waits == waits:
                    warn_no_reads(body.filename, body.lineno)
                    break

    def __iter__(self) -> Iterator[int]:
        mediator = current_mediator("tracer.iter")
        frame = sys._getframe(1)  # the body running the `for` loop
        line = frame.f_lineno
        after = statement_after(frame.f_code.co_filename, line)
        with _iterating(mediator, self, line, after):
            for index in self.indices():
                _begin_step(mediator, index)
                waits = mediator.waits
                yield index
                if self.steps.stop is None and not mediator.generating and mediator.waits == waits:
                    break


class _iterating:
    """Marks `mediator` as inside `iteration` (at `line`); restores its step afterwards."""

    def __init__(self, mediator: Mediator, iteration: Iteration, line: int, after: int | None):
        self.mediator, self.iteration, self.line, self.after = mediator, iteration, line, after

    def __enter__(self) -> None:
        self.previous = self.mediator.iteration
        self.mediator.iterating += 1

    def __exit__(self, kind: type | None, error: BaseException | None, *exc: object) -> None:
        if isinstance(error, IterationOver):  # the model is done: tell the warning about us
            bounded = self.iteration.steps.stop is not None
            error.left(self.line, self.mediator.iteration, bounded, self.after)
        self.mediator.iterating -= 1
        self.mediator.iteration = self.previous


def _begin_step(mediator: Mediator, index: int) -> None:
    """Make `index` the mediator's step; in generation, wait for that step to start, so
    the block does not begin a step that will never come."""
    mediator.iteration = index
    if index > 0 and mediator.generating:
        mediator.get("model", "input")


def warn_no_reads(filename: str, line: int) -> None:
    """Warn that the unbounded iteration at `filename:line` ran once: it reads nothing."""
    warnings.warn_explicit(
        "this `tracer.iter[...]` body reads no module, so nothing tells it when the model "
        "stops: it ran once. Read a module's `.output` inside it, or give the iteration an end "
        "(`tracer.iter[0:3]`).",
        NNsightWarning,
        filename,
        line,
    )
