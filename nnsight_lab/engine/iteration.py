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

from ..errors import NNsightWarning, TracingValueError
from ..tracing import Body, CapturingContext
from ..tracing.source import statement_after
from .mediator import IterationOver, Mediator, current_mediator


class Steps:
    """`tracer.iter`: index it with a step, a slice of steps, or a list of steps."""

    def __getitem__(self, selector: int | slice | list[int] | tuple[int, ...]) -> Iteration:
        if isinstance(selector, int):
            _check_steps([selector])
            return Iteration(slice(selector, selector + 1))
        if isinstance(selector, slice):
            _check_steps([v for v in (selector.start, selector.stop) if v is not None])
            if selector.step is not None and selector.step < 1:
                raise TracingValueError("tracer.iter[a:b:s] needs a positive s")
            return Iteration(selector)
        if isinstance(selector, (list, tuple)) and selector:
            chosen = [int(step) for step in _check_steps(list(selector))]
            if any(b <= a for a, b in itertools.pairwise(chosen)):
                raise TracingValueError(
                    f"tracer.iter[{chosen}] needs its steps in increasing order: the model "
                    "runs them in order, so a body cannot go back to an earlier one"
                )
            return Iteration(slice(chosen[0], chosen[-1] + 1), chosen)
        raise TracingValueError(
            "tracer.iter[...] takes a step, a slice or a list of steps (iter[0], iter[1:3], "
            f"iter[:], iter[[0, 2, 4]]), got {type(selector).__name__}"
            + (" (an empty one)" if isinstance(selector, (list, tuple)) else "")
        )


def _check_steps(steps: list) -> list:
    for step in steps:
        if isinstance(step, bool) or not isinstance(step, int):
            raise TracingValueError(
                f"tracer.iter[...] takes whole steps, got {type(step).__name__} {step!r}"
            )
        if step < 0:
            raise TracingValueError(
                f"tracer.iter[...] takes steps counted from 0; got a negative one ({step}): "
                "the number of steps is not known before the model runs"
            )
    return steps


class Iteration(CapturingContext):
    """One `tracer.iter[...]`, used as `with ... as step:` or `for step in ...:`.

    `steps` is the slice of steps it covers (`stop` None: until the model stops);
    `chosen` the steps it runs when they were given as a list."""

    def __init__(self, steps: slice, chosen: list[int] | None = None) -> None:
        self.steps = steps
        self.chosen = chosen

    def indices(self) -> Iterator[int]:
        if self.chosen is not None:
            return iter(self.chosen)
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
    """Marks `mediator` as inside `iteration` (at `line`); restores its step afterwards.

    When the model stops while the loop waits for a step (`IterationOver`), the loop
    tells the error about itself, for the warning. A `with` block's exit sees the
    error; a `for` loop's generator is closed while the error unwinds the body, so it
    sees `GeneratorExit`, and finds the error on the mediator (`Mediator.failing`).
    """

    def __init__(self, mediator: Mediator, iteration: Iteration, line: int, after: int | None):
        self.mediator, self.iteration, self.line, self.after = mediator, iteration, line, after

    def __enter__(self) -> None:
        self.previous = self.mediator.iteration
        self.mediator.iterating += 1

    def __exit__(self, kind: type | None, error: BaseException | None, *exc: object) -> None:
        over = error if isinstance(error, IterationOver) else None
        if over is None and isinstance(error, GeneratorExit):
            failing = self.mediator.failing
            over = failing if isinstance(failing, IterationOver) else None
        if over is not None:  # the model is done: tell the warning about us
            bounded = self.iteration.steps.stop is not None
            over.left(self.line, self.mediator.iteration, bounded, self.after)
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
