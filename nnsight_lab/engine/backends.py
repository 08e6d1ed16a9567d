"""Backends: what runs a finished tracer. A backend is one callable,
`backend(tracer) -> {name: saved value}`; local, remote and scan differ only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import TracingError
from ..tracing import Body, Namespace
from .interleaver import Interleaver
from .mediator import Mediator

if TYPE_CHECKING:
    from .tracer import Tracer


@dataclass
class Invoke:
    """One invoke as a backend sees it: a body, the namespace it runs in, and its input."""

    body: Body
    namespace: dict
    args: tuple
    kwargs: dict


class LocalBackend:
    """Runs the trace in this process, on the model in memory."""

    def __call__(self, tracer: Tracer) -> dict[str, Any]:
        body, frame = tracer.body, tracer.frame
        assert body is not None and frame is not None
        namespace = Namespace(frame.f_locals, frame.f_globals, tracer.save)
        tracer.namespace = namespace
        if body.has_invokes:
            if tracer.inputs:
                raise TracingError(
                    "this trace has both an input and `tracer.invoke(...)` blocks: pass the "
                    "input to one invoke instead, e.g. `with model.trace() as tracer:` then "
                    "`with tracer.invoke(input):`."
                )
            exec(body.code, namespace)  # collects the invokes
            invokes = tracer.invokes
        else:
            invokes = [Invoke(body, namespace, tracer.inputs, {})]
        run_invokes(tracer, invokes)
        return tracer.saved_from(namespace)


def run_invokes(tracer: Tracer, invokes: list[Invoke]) -> None:
    """Batch the invokes' inputs, run the model once with every body interleaved."""
    model = tracer.model
    prepared, mediators, size = [], [], 0
    for invoke in invokes:
        rows = None
        if invoke.args or invoke.kwargs:
            batch, count = model._prepare_input(*invoke.args, **invoke.kwargs)
            prepared.append(batch)
            rows = (size, size + count)
            size += count
        if invoke.body.first_line is not None:  # a body of only `pass` has nothing to run
            mediators.append(Mediator(invoke.body.code, invoke.namespace, rows))
    if not prepared:
        raise TracingError(
            "this trace has no input: pass one to `model.trace(input)` or to a "
            "`tracer.invoke(input)` inside it."
        )
    args, kwargs = model._batch(prepared)
    kwargs = {**kwargs, **tracer.kwargs}
    for mediator in mediators:
        if mediator.rows == (0, size):
            mediator.rows = None  # the whole batch: nothing to cut
    interleaver = Interleaver(mediators, size)
    tracer.result = interleaver.run(model._router, lambda: model._run(*args, **kwargs))


LOCAL = LocalBackend()
