"""`SteppedMediator`: a mediator whose body is a generator, run without a greenlet.

The body (compiled by `tracing.stepped`) yields each module value it reads or
writes. The mediator answers at once when the model is at that point now;
otherwise it notes the location and returns to the interleaver, which resumes it
when the model gets there, as it resumes a greenlet. Errors are thrown into the
generator at the `yield`, so they point at the user's line.

Requests marked REQUEST ask the engine itself: to open, step or close a
`tracer.iter` loop; to run backward for a `with loss.backward():` block, whose
body a `SteppedBackward` then drives up to the block's end beside backward; to
let the model reach an operation before its `.source` is listed.

Only bodies whose every read is a `yield` run this way: `can_step` checks, before
the trace runs, that each function the body calls is one that cannot read a
module's value itself (a builtin, torch, a tensor or list method).
"""

from __future__ import annotations

import builtins
import inspect
import types
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import torch

from ..errors import NotReachedError, TracingError
from ..tracing import Namespace, save
from ..tracing.stepped import Stepped
from .backward import Backward, GradientInterleaver
from .envoy import Envoy
from .iteration import Iteration, Steps, warn_no_reads
from .mediator import (
    DONE,
    WAITING,
    IterationOver,
    Mediator,
    State,
    Stopped,
    out_of_order,
    stepping,
    warn_iteration_over,
)
from .pitfalls import warn_output_index
from .plain_values import BY_TYPE, plain
from .source.operation import OperationEnvoy

if TYPE_CHECKING:
    from .interleaver import Interleaver


# The value of `tracing.rewrite.STEPS` in a body's namespace: marks its requests to the
# engine itself (a `tracer.iter` loop's, a backward block's, `.source`), not about a value.
REQUEST = object()
_NOWHERE = object()


class SteppedMediator(Mediator):
    """Runs a body compiled as a generator (see the module docstring)."""

    generator: Generator[Any, Any, None] | None = None
    # What the body waits for: (owner, name) to read, (value, owner, name) to write, or a
    # loop's step; and the (path, kind) of the location it waits at.
    request: tuple = ()
    waiting_on: tuple[str, str] = ("", "")

    def start(self, interleaver: Interleaver) -> None:
        self.interleaver = interleaver
        self.generator = types.FunctionType(self.code, self.namespace)()
        self._run(self.generator.send, None)

    def resume(self) -> None:
        self._unwait()
        self._run(None, None)

    def fail(self, error: BaseException) -> None:
        self._unwait()
        if isinstance(error, NotReachedError):  # said of the operation, as its envoy says it
            request = self.request
            if request[0] is REQUEST and request[1] == "source":
                error = _not_executed(request[2], "source", error)
            elif request[0] is not REQUEST:
                error = _not_executed(request[-2], request[-1], error)
        self._run(self.generator.throw, error)  # type: ignore[union-attr]

    def close(self) -> None:
        if self.generator is not None:
            self.generator.close()
            self.generator = None
        self.interleaver = None
        self.namespace = {}

    def park(self, state: State) -> None:
        raise TracingError(
            "a module's value was read inside a function that the trace body called, before "
            "the model reached it; nnsight_lab ran this body without a coroutine because every "
            "value it uses looked plain (see `engine.plain_values`). Run it with "
            "`nnsight_lab.CONFIG.APP.STEPPED = False`, or read the value in the body itself "
            "and pass it to the function; and please report the body."
        )

    loops: list[_Loop] | None = None  # the open `tracer.iter` loops, outermost first

    def _run(self, send: Callable[[Any], Any] | None, value: Any) -> None:
        """Send `value` into the body (throw it, or with `send` None answer the request it
        waits on); go on until the body waits for a later point or ends."""
        interleaver, generator = self.interleaver, self.generator
        assert interleaver is not None and generator is not None
        running = stepping.mediators
        running.append(self)
        try:
            while True:
                if send is None:
                    send, value = self._answer(generator, self.request)
                request = send(value)
                if request[0] is REQUEST:
                    send, value, place = self._engine_request(generator, request)
                    if send is not None:
                        continue
                    if place is None:
                        break  # the part of the body this mediator runs is over
                    path, kind = place
                else:
                    owner = request[-2]
                    if not isinstance(owner, (Envoy, OperationEnvoy)):
                        send, value = _plain(generator, request)
                        continue
                    path, kind = owner._path, "output" if request[-1] == "output" else "input"
                location = f"{path}.{kind}.{self.iteration}"
                if interleaver.location == location:
                    self.request, send = request, None
                elif interleaver.passed(path, kind, self.iteration):
                    send, value = generator.throw, out_of_order(path, kind)
                else:
                    self.request, self.location, self.state = request, location, WAITING
                    self.waiting_on = (path, kind)
                    self.waits += 1
                    interleaver.expect(path, kind)
                    return
        except (StopIteration, Stopped):
            pass
        except IterationOver as over:  # the model stopped while a loop waited for a step
            for loop in reversed(self.loops or []):
                over.left(loop.line, self.iteration, not loop.unbounded, loop.after)
            warn_iteration_over(over, self.code.co_filename)
        except BaseException as error:  # reported to the model side, raised there
            self.error = error
        finally:
            running.pop()
        self.state = DONE

    def _answer(self, generator: Generator, request: tuple) -> tuple[Callable[[Any], Any], Any]:
        """Read or write the value the model offers now; what to send back into the body."""
        interleaver = self.interleaver
        assert interleaver is not None
        if request[0] is REQUEST:
            if request[1] == "source":  # the operation's call began: its callee is known
                return generator.send, request[2]
            request[2].waits = self.waits  # the step began: its loop body runs
            return generator.send, True
        if request[-1] != "output" or self.rows is not None:
            return _plain(generator, request)  # through the envoy: rows, `.input`
        if len(request) == 2:
            value, owner = interleaver.value, request[0]
            if owner._block:  # as `Envoy.output` checks
                frame = generator.gi_frame  # type: ignore[attr-defined]
                warn_output_index(owner._path, value, frame)
            return generator.send, value
        interleaver.value = request[0]
        return generator.send, None

    def _engine_request(self, generator: Generator, request: tuple) -> tuple[Any, Any, Any]:
        """Answer a request to the engine: `(send, value, None)` to go on at once,
        `(None, None, (path, kind))` to wait for the model there, or `(None, None, None)`
        when the part of the body this mediator runs is over (`SteppedBackward`)."""
        action, owner = request[1], request[2]
        if action == "backward":
            return (*self._backward(generator, owner), None)
        if action == "source":  # `owner.source`: an operation's waits for its call
            if isinstance(owner, OperationEnvoy) and not owner.callee_known():
                return None, None, (owner._path, "fn")
            return generator.send, owner, None
        send, value = self._loop(generator, request)
        if send is None:  # the step starts with the model's call
            return None, None, ("model", "input")
        return send, value, None

    def _backward(self, generator: Generator, backward: Backward) -> tuple[Any, Any]:
        """Run backward, and the `with loss.backward():` block's body beside it."""
        try:
            backward.interleave(SteppedBackward(self))
        except BaseException as error:
            if inspect.getgeneratorstate(generator) == inspect.GEN_CLOSED:  # the block raised it
                raise
            return generator.throw, error  # backward itself failed
        return generator.send, None

    def _unwait(self) -> None:
        if self.state is WAITING:
            self.interleaver.unexpect(*self.waiting_on)  # type: ignore[union-attr]
            self.location = None

    def _loop(self, generator: Generator, request: tuple) -> tuple[Any, Any]:
        """Open, advance or close a `tracer.iter` loop; (None, None) when advancing must
        first wait for the model to start the step (in generation)."""
        try:
            action = request[1]
            if action == "open":
                _, _, steps, line, after, warns = request
                loop = _Loop(steps, self.iteration, line, after, warns)
                self.loops = [*(self.loops or []), loop]
                self.iterating += 1
                return generator.send, loop
            loop = request[2]
            if action == "close" or not loop.open:
                self._close(loop)
                return generator.send, None
            if loop.unbounded and loop.index is not None and self.waits == loop.waits:
                if not self.generating:  # a body that reads nothing: nothing ends the loop
                    if loop.warns:
                        warn_no_reads(self.code.co_filename, loop.line)
                    self._close(loop)
                    return generator.send, False
            index = next(loop.indices, None)
            if index is None:
                self._close(loop)
                return generator.send, False
            loop.index = self.iteration = index
            if index > 0 and self.generating:
                return None, None  # wait for the model's call of this step
            loop.waits = self.waits
            return generator.send, True
        except BaseException as error:
            return generator.throw, error

    def _close(self, loop: _Loop) -> None:
        if loop.open:
            loop.open = False
            self.iterating -= 1
            self.iteration = loop.previous
            self.loops = [other for other in self.loops or [] if other is not loop]


class SteppedBackward(SteppedMediator):
    """The `with loss.backward():` block of a stepped body, run beside backward.

    It drives its body's generator from the block's first line to its end, as the
    mediator of a `GradientInterleaver`: a `.grad` read waits at the gradient's
    location until backward's hook on the tensor offers it. At the block's end it
    is done, and the body's own mediator goes on once backward has returned.
    """

    def __init__(self, body: SteppedMediator) -> None:
        super().__init__(body.code, body.namespace, None)
        self.generator = body.generator

    def start(self, interleaver: Interleaver) -> None:
        self.interleaver = interleaver
        self._run(self.generator.send, None)  # type: ignore[union-attr]

    def close(self) -> None:
        self.generator = None  # the body's mediator goes on with it
        self.interleaver = None

    def _answer(self, generator: Generator, request: tuple) -> tuple[Callable[[Any], Any], Any]:
        interleaver = self.interleaver
        assert interleaver is not None
        if request[1] == "grad":
            return generator.send, interleaver.value
        interleaver.value = request[3]  # "set_grad": the gradient that flows on
        return generator.send, None

    def _engine_request(self, generator: Generator, request: tuple) -> tuple[Any, Any, Any]:
        if request[1] == "backward_end":
            return None, None, None
        interleaver = self.interleaver
        assert isinstance(interleaver, GradientInterleaver)
        try:
            return None, None, (interleaver.watch(request[2]), "grad")
        except BaseException as error:
            return generator.throw, error, None


class _Loop:
    """One open `tracer.iter[...]` loop of a stepped body (see `tracing.stepped`)."""

    def __init__(self, steps: Any, previous: int, line: int, after: int | None, warns: bool):
        if not isinstance(steps, Iteration):
            raise TracingError("`x.iter[...]` in a trace body must be the tracer's `tracer.iter`")
        self.indices = steps.indices()
        self.unbounded = steps.steps.stop is None
        self.previous, self.line, self.after, self.warns = previous, line, after, warns
        self.index: int | None = None  # the step the loop is at
        self.waits = 0  # the body's waits when the step began
        self.open = True


def _not_executed(owner: Any, access: str, error: NotReachedError) -> NotReachedError:
    return owner.not_executed(access) if isinstance(owner, OperationEnvoy) else error


def _plain(generator: Generator, request: tuple) -> tuple[Callable[[Any], Any], Any]:
    """Read or write the attribute a request names, as Python would; what to send back."""
    try:
        if len(request) == 2:
            return generator.send, getattr(*request)
        setattr(request[1], request[2], request[0])
        return generator.send, None
    except BaseException as error:
        return generator.throw, error


# -- which bodies can run this way -------------------------------------------------

_BUILTINS = {
    id(getattr(builtins, name))
    for name in (
        "abs all any bool dict divmod enumerate float hash id int isinstance len list max min "
        "pow print range repr reversed round set slice sorted str sum tuple type zip"
    ).split()
} | {id(save)}  # `from nnsight_lab import save`
_MODULES = ("torch", "math", "numpy", "einops")
_METHODS = (
    (
        {n for t in (torch.Tensor, list, dict, set, str) for n in dir(t) if not n.startswith("_")}
        | {"stop"}  # tracer.stop(): it only sets a flag on the interleaver
    )
    - {n for n in dir(Envoy) if not n.startswith("_")}
    - {
        "apply_",  # these run a function of the user's
        "map_",
        "map2_",
        "register_hook",
        "register_post_accumulate_grad_hook",
        "backward",  # runs the user's backward hooks
    }
)


def can_step(stepped: Stepped, namespace: Namespace) -> bool:
    """Whether every call of a stepped body is safe with the values its names have now,
    every value it reads is `plain` (no user code of its own), and what it steps through
    is a tracer's `iter`. A body that cannot step runs in a greenlet, with the same result."""
    # The names' values: the namespace's own (the engine's helpers), else the caller's. Read
    # with `dict.get`, not `namespace[name]`: this runs per trace and `__missing__` costs.
    for name in stepped.reads:
        value = namespace.get(name, _NOWHERE)
        if value is _NOWHERE:
            value = namespace.caller_locals.get(name, _NOWHERE)
            if value is _NOWHERE:
                value = namespace.caller_globals.get(name, _NOWHERE)
                if value is _NOWHERE:
                    continue  # a builtin (checked as a call), or a name the body assigns first
        if not (BY_TYPE.get(type(value)) or plain(value)):
            return False
    if stepped.tracers or stepped.calls:
        return _calls_can_step(stepped, namespace)
    return True


def _calls_can_step(stepped: Stepped, namespace: Namespace) -> bool:
    """The part of `can_step` about `tracer.iter` loops and calls."""
    for name in stepped.tracers:
        try:
            tracer = namespace[name]
        except KeyError:
            return False
        if not isinstance(getattr(tracer, "iter", None), Steps):
            return False
    for call in stepped.calls:
        if call.root is None:
            if call.attributes[-1] not in _METHODS:
                return False
            continue
        try:
            value = namespace[call.root]
        except KeyError:
            value = getattr(builtins, call.root, None)
        if not call.attributes:
            if id(value) not in _BUILTINS:
                return False
        elif isinstance(value, types.ModuleType):
            package = value.__name__.partition(".")[0]
            if not (
                package in _MODULES or (package == "nnsight_lab" and call.attributes == ("save",))
            ):
                return False
        elif call.attributes[-1] not in _METHODS:
            return False
    return True
