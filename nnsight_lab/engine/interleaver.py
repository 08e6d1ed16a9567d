"""`Interleaver`: the model side of a trace.

Mental model: the model runs in the caller's greenlet; every module call passes
its input and output through `handle(location, value)`, which resumes, in invoke
order, each mediator waiting for that location. A mediator reads or replaces the
value, then parks again at its next location (or ends). A location is
`"<module path>.<input|output>.<call index>"`, one grammar for every point.

Out-of-order reads are found from two counters per module (calls started, calls
finished, kept by the routing wrappers): a location whose call has already
started (input) or finished (output) will never come again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import NotReachedError
from .hooks import Router
from .mediator import Mediator, State, _access

_RUNNABLE = (State.DONE, State.AT_NAME)


class Abort(BaseException):
    """Unwinds the model's forward pass after a body failed (not an `Exception`,
    so model code with `except Exception` cannot swallow it)."""


class Interleaver:
    """Runs `mediators` alongside one execution of a model.

    Args:
        mediators: one per invoke, in invoke order.
        batch_size: rows in the batched input (for cutting values per invoke).
    """

    def __init__(self, mediators: list[Mediator], batch_size: int) -> None:
        self.mediators = mediators
        self.batch_size = batch_size
        self.location: str | None = None
        self.value: Any = None
        self.started: dict[str, int] = {}  # path -> calls started
        self.finished: dict[str, int] = {}  # path -> calls finished
        self.wanted_inputs: dict[str, int] = {}  # path -> bodies waiting on its input
        self.wanted_outputs: dict[str, int] = {}  # path -> bodies waiting on its output
        self.error: BaseException | None = None

    def run(self, router: Router, call: Callable[[], Any]) -> Any:
        """Start the bodies, run `call()` (the model) routed through us if a body waits.

        Returns:
            What `call()` returned.

        Raises:
            The first error a body raised (with the body's traceback), or the model's.
        """
        try:
            waiting = False
            for mediator in self.mediators:
                mediator.start(self)
                if mediator.error is not None:
                    self._abort(mediator)
                waiting = waiting or mediator.state is not State.DONE
            if waiting:
                self.step()  # bodies released by a barrier or an assignment before the model ran
                waiting = any(m.state is not State.DONE for m in self.mediators)
            if not waiting:
                return call()
            unroute = router.install(self)
            try:
                output = call()
            finally:
                unroute()
            self.finish()
            return output
        except Abort:
            error, self.error = self.error, None
            assert error is not None
            raise error from error.__cause__
        finally:
            for mediator in self.mediators:
                mediator.close()

    # -- called from the routing wrappers (see hooks.py) -------------------------

    def handle(self, location: str, value: Any) -> Any:
        """Offer `value` at `location` to the waiting bodies; returns the value they leave."""
        self.location, self.value = location, value
        try:
            self.step()
            return self.value
        finally:
            self.location = self.value = None

    def step(self) -> None:
        """Resume, in invoke order, every body that can go on at the current location."""
        location = self.location
        progressed = True
        while progressed:
            progressed = False
            for mediator in self.mediators:
                state = mediator.state
                if (state is State.WAITING and mediator.location == location) or (
                    state is State.RELEASED
                ):
                    mediator.resume()
                    if mediator.error is not None:
                        self._abort(mediator)
                    progressed = True
                elif state is State.AT_NAME and not self._could_assign(mediator):
                    mediator.resume()  # no body can assign its name any more: NameError
                    if mediator.error is not None:
                        self._abort(mediator)
                    progressed = True

    # -- called from the mediators -------------------------------------------

    def passed(self, path: str, kind: str, index: int) -> bool:
        """Whether the model has gone past `path.kind` of call `index`."""
        counts = self.started if kind == "input" else self.finished
        return counts.get(path, 0) > index

    def expect(self, path: str, kind: str) -> None:
        wanted = self.wanted_inputs if kind == "input" else self.wanted_outputs
        wanted[path] = wanted.get(path, 0) + 1

    def unexpect(self, path: str, kind: str) -> None:
        wanted = self.wanted_inputs if kind == "input" else self.wanted_outputs
        left = wanted[path] - 1
        if left:
            wanted[path] = left
        else:
            del wanted[path]

    def wait_for_name(self, mediator: Mediator, name: str) -> None:
        """Park `mediator` until another body assigns `name`.

        Raises:
            KeyError: no other body can assign it any more (Python raises NameError).
        """
        if not self._could_assign(mediator):
            raise KeyError(name)
        mediator.name = name
        try:
            mediator.park(State.AT_NAME)
        finally:
            mediator.name = None
        if mediator.state is State.AT_NAME:  # resumed without a release: nobody assigned it
            raise KeyError(name)

    def name_assigned(self, name: str) -> None:
        for mediator in self.mediators:
            if mediator.state is State.AT_NAME and mediator.name == name:
                mediator.state = State.RELEASED

    def _could_assign(self, waiting: Mediator) -> bool:
        return any(m is not waiting and m.state not in _RUNNABLE for m in self.mediators)

    # -- end of the forward pass ---------------------------------------------

    def finish(self) -> None:
        """Fail every body still waiting: the model will not reach what it waits for."""
        for mediator in self.mediators:
            if mediator.state is State.WAITING:
                path, kind, _ = (mediator.location or "..").rsplit(".", 2)
                mediator.fail(
                    NotReachedError(
                        f"`{_access(path, kind)}` was never reached: the model finished without "
                        "running that module (with this input), so there is nothing to read. "
                        "Check the module path with print(model)."
                    )
                )
            elif mediator.state is State.AT_NAME:
                mediator.resume()
            elif mediator.state is State.AT_BARRIER:
                mediator.fail(
                    NotReachedError(
                        "this barrier was never passed: fewer invokes called it than its "
                        "count. Give `tracer.barrier(n)` the number of invokes that call it."
                    )
                )
            if mediator.error is not None:
                self._abort(mediator)

    def _abort(self, mediator: Mediator) -> None:
        error, mediator.error = mediator.error, None
        self.error = error
        raise Abort from error
