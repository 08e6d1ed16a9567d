"""`Tracer` (`with model.trace(...)`), `Invoker` (`with tracer.invoke(...)`), `Barrier`.

A tracer captures its body and gives itself to a backend, which runs it and
returns the saved values; the tracer writes those back into the caller's scope.
The tracer does not care which backend runs it: local, remote, or anything that
takes the finished tracer.

Without invokes, the whole body is one invoke of the trace's input. With
invokes, the body runs first to collect them (`tracer.invoke` registers a body
and an input each), then every invoke runs as one batched forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from ..errors import TracingError, TracingValueError
from ..tracing import Body, CapturingContext, Layer, Namespace, SavingContext
from .backends import LOCAL, Invoke
from .cache import CPU, Cache, open_cache
from .iteration import Iteration, Steps
from .mediator import State, Stopped, current_mediator
from .session import Session

if TYPE_CHECKING:
    from ..models.nnsight import NNsight

Backend = Callable[["Tracer"], dict[str, Any]]


class _Gone:
    """`tracer.model` after the block: the tracer let the model go (see `Tracer.execute`)."""

    def __getattr__(self, name: str) -> Any:
        raise TracingError(
            "this tracer's block has ended and it no longer holds the model: use the model "
            "itself (the variable you traced), not `tracer.model`."
        )


_GONE = _Gone()


class Tracer(SavingContext):
    """The context of `with model.trace(*inputs, **kwargs) as tracer:`.

    Attributes:
        model: the wrapped model.
        inputs, kwargs: the trace's input (one implicit invoke) and model keyword arguments.
        entry: the name of the model's method that runs it (`_run`, `_generate`).
        invokes: the invokes collected from the body.
        result: what the model returned, after the trace.
    """

    probe = staticmethod(torch.is_grad_enabled)  # the grad mode where the body starts

    def __init__(
        self,
        model: NNsight,
        *inputs: Any,
        backend: Backend | None = None,
        entry: str = "_run",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.model = model
        self.inputs = inputs
        self.kwargs = kwargs
        self.backend = backend
        self.entry = entry  # the model's method that runs it: "_run", "_generate"
        self.pending_caches: list[Cache] = []  # opened while invokes are collected
        self.invokes: list[Invoke] = []

    # Set while the trace runs (class defaults: one fewer write each per trace).
    namespace: Namespace | None = None
    scope: tuple[dict, dict] | None = None  # the caller's (locals, globals)
    _result: Any = None  # what the model returned (see `result`)

    @property
    def result(self) -> Any:
        """What the traced call returned: the model's output for `trace`, the token ids
        `[batch, seq]` for `generate`. Read in the body, it waits for the call to return
        (save it to keep it); after the block it is the value itself.

        Example:
            >>> with llm.generate("Hello", max_new_tokens=3) as tracer:
            ...     ids = tracer.result.save()
        """
        if current_mediator("tracer.result", optional=True) is None:
            return self._result
        returned = self.model.generator if self.entry == "_generate" else self.model
        return returned.output

    @result.setter
    def result(self, value: Any) -> None:
        self._result = value

    def invoke(self, *inputs: Any, **kwargs: Any) -> Invoker:
        """Add an input to the batch; the block's body sees only that input's rows.

        Example:
            >>> with model.trace() as tracer:
            ...     with tracer.invoke("The Eiffel Tower is in"):
            ...         a = model.lm_head.output.save()
        """
        return Invoker(self, inputs, kwargs)

    def barrier(self, participants: int) -> Barrier:
        """A point that `participants` invokes wait at until all have reached it."""
        return Barrier(participants)

    @property
    def iter(self) -> Steps:
        """`tracer.iter[steps]`: run a block once per step (generation step, module call)."""
        return Steps()

    def all(self) -> Iteration:
        """Every step: the same as `tracer.iter[:]`."""
        return Steps()[:]

    def stop(self) -> None:
        """End the forward pass right after the current point: later modules do not run.

        The body ends here too (what it saved so far reaches the caller; the lines after
        `tracer.stop()` do not run). In a batch of invokes it ends the forward for all.

        Example:
            >>> with llm.trace("Hello") as tracer:
            ...     layer0 = llm.transformer.h[0].output.save()
            ...     tracer.stop()  # the later blocks do not run
        """
        interleaver = current_mediator("tracer.stop()").interleaver
        interleaver.stopping = True
        raise Stopped

    def cache(
        self,
        modules: list | None = None,
        device: torch.device | str | None = CPU,
        dtype: torch.dtype | None = None,
        detach: bool = True,
        include_output: bool = True,
        include_inputs: bool = False,
        non_blocking: bool = False,
    ) -> Cache:
        """Record every module's output (or those of `modules`) from here on, kept after.

        Args:
            modules: envoys or paths to cache; all modules when None.
            device: move recorded tensors there (default the CPU; None: leave them).
            dtype: cast recorded floating tensors to it.
            detach: detach recorded tensors from the autograd graph.
            include_output: record each call's output.
            include_inputs: record each call's inputs `(args, kwargs)`.
            non_blocking: copy to `device` asynchronously; only safe to read after
                synchronizing (`torch.cuda.synchronize()`), so off by default.

        Returns:
            The cache (saved: it fills as the model runs). Opened inside an invoke, it
            holds that invoke's rows; a module called per generation step has one value
            per step (`len(cache[path])`).

        Example:
            >>> with llm.trace("Hello") as tracer:
            ...     cache = tracer.cache()
            >>> cache["model.transformer.h.0"].output
        """
        options: dict[str, Any] = {"device": device, "dtype": dtype, "detach": detach}
        options.update(include_output=include_output, include_inputs=include_inputs)
        options["non_blocking"] = non_blocking
        return open_cache(self, modules, **options)

    def execute(self, body: Body, caller_locals: dict, caller_globals: dict) -> dict[str, Any]:
        """Run `body` as this trace's body, reading the caller's variables from the two
        dicts; returns the values it saved, by name. (`with` calls this; so does the
        `%%trace` cell magic, with a body compiled from the cell.)"""
        self.body, self.scope = body, (caller_locals, caller_globals)
        self.activate()
        grad = self.at_body
        self.at_body = None
        backend = self.backend or LOCAL
        try:
            if grad is None or grad == torch.is_grad_enabled():
                return backend(self)  # the usual case: no grad mode to set (a context costs)
            with torch.set_grad_enabled(grad):
                return backend(self)
        finally:
            self.deactivate()
            self.scope = None
            self.namespace = None
            # A tracer kept after its block (`as tracer` in a notebook) holds neither the
            # model nor the inputs: `del model` then frees its memory (`tracer.result` stays).
            self.invokes, self.inputs, self.kwargs = [], (), {}
            self.model = _GONE  # type: ignore[assignment]

    def saved_from(self, namespace: Namespace) -> dict[str, Any]:
        """The variables of `namespace` that the body saved (in a session: all it assigned,
        for the session's later traces; the session keeps only what was saved)."""
        if isinstance(self.outer(), Session):
            return {k: v for k, v in namespace.items() if not k.startswith("__")}
        return self.saved_in(namespace)


class Invoker(CapturingContext):
    """The context of `with tracer.invoke(*inputs):` inside a trace body."""

    def __init__(self, tracer: Tracer, inputs: tuple, kwargs: dict) -> None:
        self.tracer = tracer
        self.inputs = inputs
        self.kwargs = kwargs

    def run(self, body: Body, frame: FrameType) -> None:
        scope = frame.f_globals  # the trace's namespace (or an invoke's layer on it) if inline
        trace = self.tracer.namespace
        inline = trace is not None and (scope.below if isinstance(scope, Layer) else scope) is trace
        if current_mediator("tracer.invoke", optional=True) is not None:
            raise TracingValueError(
                "`tracer.invoke(...)` cannot be opened inside another invoke: the trace is "
                "already running its invokes. Open each invoke directly in the body of "
                "`with model.trace() as tracer:`, one after the other."
                if inline
                else "`tracer.invoke(...)` was opened in a function called while the trace "
                "runs its bodies (inside an invoke, or without being passed the tracer): "
                "call it as `helper(tracer, ...)` directly in the body of "
                "`with model.trace() as tracer:`, outside the invokes, so that the trace "
                "collects the invokes it opens."
            )
        if trace is None or (isinstance(scope, (Namespace, Layer)) and not inline):
            raise TracingValueError(
                "`tracer.invoke(...)` must be opened in the body of its own "
                "`with model.trace() as tracer:` block (or in a function that body calls)."
            )
        # Opened in a function the body called: the invoke sees that function's variables.
        namespace = trace if inline else trace.beside(frame.f_locals, frame.f_globals)
        layer = Layer(namespace, missing=_wait_for_name, assigned=_name_assigned)
        self.tracer.invokes.append(Invoke(body, layer, self.inputs, self.kwargs))


def _wait_for_name(name: str) -> Any:
    """A name no one has assigned yet: wait for an earlier invoke to assign it."""
    mediator = current_mediator(name)
    interleaver = mediator.interleaver
    assert interleaver is not None
    interleaver.wait_for_name(mediator, name)
    return mediator.namespace[name]


def _name_assigned(name: str) -> None:
    mediator = current_mediator(name)
    if mediator.interleaver is not None:
        mediator.interleaver.name_assigned(name)


class Barrier:
    """`barrier = tracer.barrier(n)`; each of n invokes calls `barrier()` to meet there."""

    def __init__(self, participants: int) -> None:
        if participants < 1:
            raise TracingError(f"a barrier needs at least one participant, got {participants}")
        self.participants = participants
        self.arrived: list = []

    def __call__(self) -> None:
        mediator = current_mediator("barrier()")
        self.arrived.append(mediator)
        if len(self.arrived) < self.participants:
            mediator.park(State.AT_BARRIER)
            return
        for other in self.arrived:
            if other is not mediator:
                other.state = State.RELEASED
        self.arrived = []
