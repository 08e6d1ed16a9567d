"""Backends: what runs a finished tracer. A backend is one callable,
`backend(tracer) -> {name: saved value}`; local, remote and scan differ only here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import TracingError
from ..tracing import Namespace
from .interleaver import Interleaver
from .mediator import Mediator

if TYPE_CHECKING:
    from .tracer import Tracer


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
            invokes = [(i.body.code, i.namespace, i.args, i.kwargs) for i in tracer.invokes]
        else:
            invokes = [(body.code, namespace, tracer.inputs, {})]
        run_invokes(tracer, invokes)
        return tracer.saved_from(namespace)


def run_invokes(tracer: Tracer, invokes: list[tuple]) -> None:
    """Batch the invokes' inputs, run the model once with every body interleaved."""
    model = tracer.model
    prepared, mediators, size = [], [], 0
    for code, namespace, args, kwargs in invokes:
        rows = None
        if args or kwargs:
            batch, count = model._prepare_input(*args, **kwargs)
            prepared.append(batch)
            rows = (size, size + count)
            size += count
        mediators.append(Mediator(code, namespace, rows))
    if not prepared:
        raise TracingError(
            "this trace has no input: pass one to `model.trace(input)` or to a "
            "`tracer.invoke(input)` inside it."
        )
    args, kwargs = model._batch(prepared)
    kwargs = {**kwargs, **tracer.kwargs}
    interleaver = Interleaver(mediators, size)
    tracer.result = interleaver.run(
        model._routes, lambda: model._run(*args, **kwargs)
    )
