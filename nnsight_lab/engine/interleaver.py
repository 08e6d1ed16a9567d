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
from ..tracing.tracebacks import reraise
from . import tensor_save
from .hooks import Router
from .mediator import (
    AT_BARRIER,
    AT_NAME,
    DONE,
    NEW,
    RELEASED,
    WAITING,
    BarrierError,
    IterationOver,
    Mediator,
    _access,
)
from .pitfalls import never_ran_hint

tensor_save.install()  # `tensor.save()` where no body's rewrite reaches (see `tensor_save`)

_RUNNABLE = (DONE, AT_NAME)
_IDLE = (DONE, NEW)


class Abort(BaseException):
    """Unwinds the model's forward pass after a body failed (not an `Exception`,
    so model code with `except Exception` cannot swallow it)."""


class Stop(BaseException):
    """Unwinds the model's forward pass after `tracer.stop()`."""


class Interleaver:
    """Runs `mediators` alongside one execution of a model.

    Args:
        mediators: one per invoke, in invoke order.
        batch_size: rows in the batched input (for cutting values per invoke).
    """

    # Defaults of what a trace may set (class attributes: one trace builds one interleaver).
    location: str | None = None  # where the model is, while it offers a value
    value: Any = None  # the value it offers there
    stopping = False  # set by `tracer.stop()`: end the forward after this point
    stop_when_done = False  # end the forward once every body is done (a scan: output is fake)
    cache: Any = None  # a Cache recording values, from `tracer.cache()`
    result: Any = None  # what the model returned, for bodies run after it
    router: Router | None = None
    _unroute: Callable[[], None] | None = None  # ends routing, while it lasts
    error: BaseException | None = None

    def __init__(self, mediators: list[Mediator], batch_size: int) -> None:
        self.mediators = mediators
        self.batch_size = batch_size
        self.started: dict[str, int] = {}  # path -> calls started
        self.finished: dict[str, int] = {}  # path -> calls finished
        self.wanted_inputs: dict[str, int] = {}  # path -> bodies waiting on its input
        self.wanted_outputs: dict[str, int] = {}  # path -> bodies waiting on its output
        self.skips: dict[str, Any] = {}  # path -> the output to use instead of running it

    def run(self, router: Router | None, call: Callable[[], Any]) -> Any:
        """Start the bodies, run `call()` (the model) routed through us if a body waits.

        Bodies marked `deferred` start only after `call()` returned (they can read
        only what the model returned, see `Mediator.deferred`).

        Returns:
            What `call()` returned.

        Raises:
            The first error a body raised (with the body's traceback), or the model's.
        """
        if router is not None:
            router.lock.acquire()  # one trace at a time on a model (see `hooks`)
        self.router = router
        try:
            waiting = False
            for mediator in self.mediators:
                if mediator.deferred:
                    continue
                mediator.start(self)
                if mediator.error is not None:
                    self._abort(mediator)
                waiting = waiting or mediator.state is not DONE
            mediators = self.mediators
            if waiting and (len(mediators) > 1 or mediators[0].state is not WAITING):
                self.step()  # bodies released by a barrier or an assignment before the model ran
                waiting = self._waiting()
            if self.stopping:
                output = None
            elif not waiting and self.cache is None:
                output = call()
            else:
                output = self._call_routed(router, call)
            self.result = output
            self.finish()
            return output
        except Abort:
            error, self.error = self.error, None
            assert error is not None
        finally:
            try:
                for mediator in self.mediators:
                    mediator.close()
            finally:
                if router is not None:
                    router.lock.release()
        reraise(error)  # outside `except Abort`: the user's error, not chained to Abort

    def _waiting(self) -> bool:
        for mediator in self.mediators:  # a loop, not any(): cheaper when it stops early
            if mediator.state not in _IDLE:
                return True
        return False

    def _all_done(self) -> bool:
        """Whether nothing can read the model any more: no body left, deferred or caching."""
        if self.cache is not None:
            return False
        for mediator in self.mediators:  # a loop, not all(): run once per offered value
            if mediator.state is not DONE:
                return False
        return True

    def _call_routed(self, router: Router | None, call: Callable[[], Any]) -> Any:
        self._unroute = router.install(self) if router is not None else None
        try:
            return call()
        except Stop:
            return None
        finally:
            self._stop_routing()

    def _stop_routing(self) -> None:
        unroute, self._unroute = self._unroute, None
        if unroute is not None:
            unroute()

    # -- called from the routing wrappers (see hooks.py) -------------------------

    def handle(self, location: str, value: Any) -> Any:
        """Offer `value` at `location` to the waiting bodies; returns the value they leave."""
        self.location, self.value = location, value
        try:
            self.step()
            if self.cache is not None:
                self.cache.record(location, self.value)
            if self.stopping or (self.stop_when_done and self._all_done()):
                raise Stop
            if self._unroute is not None and self._all_done():
                # Nothing reads the model any more: the rest of the run (the next steps of
                # a generation) calls its modules directly.
                self._stop_routing()
            return self.value
        finally:
            self.location = self.value = None

    def step(self) -> None:
        """Resume, in invoke order, every body that can go on at the current location."""
        location, mediators = self.location, self.mediators
        again = True
        while again:
            again = False
            for mediator in mediators:
                state = mediator.state
                if state is WAITING:
                    if mediator.location != location:
                        continue
                elif state is AT_NAME:
                    if self._could_assign(mediator):
                        continue  # else resumed: no body can assign its name any more: NameError
                elif state is not RELEASED:
                    continue
                mediator.resume()
                if mediator.error is not None:
                    self._abort(mediator)
                # A body that ran may have released another (a barrier, a name): look again.
                # A lone body cannot: it never waits for a barrier or a name, nor twice here.
                again = len(mediators) > 1

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
            mediator.park(AT_NAME)
        finally:
            mediator.name = None
        if mediator.state is AT_NAME:  # resumed without a release: nobody assigned it
            raise KeyError(name)

    def name_assigned(self, name: str) -> None:
        for mediator in self.mediators:
            if mediator.state is AT_NAME and mediator.name == name:
                mediator.state = RELEASED

    def _could_assign(self, waiting: Mediator) -> bool:
        return any(m is not waiting and m.state not in _RUNNABLE for m in self.mediators)

    # -- end of the forward pass ---------------------------------------------

    def finish(self) -> None:
        """Run deferred bodies; end every body still waiting (the model is done)."""
        for mediator in self.mediators:
            if mediator.deferred and mediator.state is NEW:
                mediator.start(self)
            state = mediator.state
            if state is WAITING:
                if mediator.iterating:
                    # no further step: the iteration ends
                    mediator.fail(IterationOver(mediator.location))
                else:
                    mediator.fail(self.missed(mediator.location or ".."))
            elif state is AT_NAME:
                mediator.resume()
            elif state is AT_BARRIER:
                mediator.fail(
                    BarrierError(
                        "this barrier was never reached by every block: fewer invokes called "
                        "it than its count. Give `tracer.barrier(n)` the number of invokes "
                        "that call it."
                    )
                )
            if mediator.error is not None:
                self._abort(mediator)

    def missed(self, location: str) -> BaseException:
        """The error for a body that waits on `location` when the model has finished."""
        path, kind, _ = location.rsplit(".", 2)
        if self.stopping:
            return NotReachedError(
                f"`{_access(path, kind)}` was never reached: `tracer.stop()` ended the forward "
                "pass before the model got there. Read it before the `tracer.stop()` line (in "
                "every invoke), or stop later."
            )
        return NotReachedError(
            f"`{_access(path, kind)}` was never reached: the model finished without running "
            "it (with this input), so there is nothing to read. Check the module path with "
            "print(model), and that the branch holding this operation runs."
            + (never_ran_hint(self.router.modules, path) if self.router is not None else "")
        )

    def _abort(self, mediator: Mediator) -> None:
        error, mediator.error = mediator.error, None
        self.error = error
        raise Abort from error
