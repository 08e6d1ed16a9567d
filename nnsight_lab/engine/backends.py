"""Backends: what runs a finished tracer. A backend is one callable,
`backend(tracer) -> {name: saved value}`; local, remote and scan differ only here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..config import CONFIG
from ..errors import TracingError, TracingValueError
from ..tracing import Body, Namespace, save
from ..tracing import rewrite as names
from .backward import Backward, grad_of, set_grad
from .cache import start as start_cache
from .inputs import batch_inputs, prepare_input
from .interleaver import Interleaver
from .mediator import Mediator
from .stepped_mediator import REQUEST, SteppedMediator, can_step

if TYPE_CHECKING:
    from .tracer import Tracer


@dataclass
class Invoke:
    """One invoke as a backend sees it: a body, the namespace it runs in, and its input."""

    body: Body | None  # None: rows of the batch with no body of their own
    namespace: dict
    args: tuple
    kwargs: dict


class LocalBackend:
    """Runs the trace in this process, on the model in memory."""

    def __call__(self, tracer: Tracer) -> dict[str, Any]:
        body, scope = tracer.body, tracer.scope
        assert body is not None and scope is not None
        namespace = Namespace(*scope, self.helpers(tracer))
        tracer.namespace = namespace
        if body.has_invokes:
            exec(body.code, namespace)  # collects the invokes
            invokes = tracer.invokes
            if tracer.inputs:  # the trace's own input: rows that invokes with no input see
                invokes = [Invoke(None, namespace, tracer.inputs, {}), *invokes]
        elif not tracer.inputs and tracer.kwargs and tracer.model._kwargs_are_input:
            # `model.trace(pixel_values=x)`: keyword-only input to a plain module
            invokes = [Invoke(body, namespace, (), tracer.kwargs)]
            tracer.kwargs = {}
        else:
            invokes = [Invoke(body, namespace, tracer.inputs, {})]
        run_invokes(tracer, invokes, self)
        return tracer.saved_from(namespace)

    def helpers(self, tracer: Tracer) -> dict[str, Any]:
        """The engine functions that this backend's bodies call (`x.save()` among them)."""
        return HELPERS

    stops_early = False  # end the forward once every body is done (what it returns unused)

    def call(self, tracer: Tracer, args: tuple, kwargs: dict) -> Any:
        """Run the model once on the batched input (routed by the interleaver)."""
        return getattr(tracer.model, tracer.entry)(*args, **kwargs)


def helpers(save: Callable[[Any], Any]) -> dict[str, Any]:
    """The engine functions that compiled bodies call (see `tracing.rewrite`)."""
    return {
        names.SAVE: save,
        names.GRAD: grad_of,
        names.SET_GRAD: set_grad,
        names.BACKWARD: Backward,
        names.SOURCE: source_of,
        names.STEPS: REQUEST,
    }


def source_of(value: Any) -> Any:
    """`value.source` in a trace body, with a clear error for a tensor."""
    try:
        return value.source
    except AttributeError:
        if isinstance(value, torch.Tensor):
            raise TracingError(
                f"`.source` lists the operations inside a module's forward, and this is a "
                f"{type(value).__name__}, not a module: use it on the module, e.g. "
                "`model.layer1.source`."
            ) from None
        raise


def run_invokes(tracer: Tracer, invokes: list[Invoke], backend: LocalBackend) -> None:
    """Batch the invokes' inputs, run the model once (`backend.call`) with every body
    interleaved."""
    model = tracer.model
    prepared, mediators, size, endless = [], [], 0, False
    for invoke in invokes:
        rows = None
        if invoke.args or invoke.kwargs:
            where = invoke.body or tracer.body  # names the user's line in an input error
            batch, count = prepare_input(model, invoke.args, invoke.kwargs, where)
            prepared.append(batch)
            rows = (size, size + count)
            size += count
        body = invoke.body
        if body is not None and body.first_line is not None:  # `pass` has nothing to run
            # An invoke with no input after one that iterates without end runs once the
            # model is done (nothing would tell it that the iteration is over).
            deferred = rows is None and endless
            mediator = _mediator(body, invoke.namespace, rows, deferred, model._steppable)
            mediator.generating = tracer.entry == "_generate"
            mediators.append(mediator)
            endless = endless or body.endless
    if not prepared:
        raise TracingValueError(
            "this trace has no input: pass one to `model.trace(input)` or to a "
            "`tracer.invoke(input)` inside it."
        )
    args, kwargs = batch_inputs(model, prepared, getattr(model, tracer.entry))
    kwargs = {**kwargs, **tracer.kwargs}
    for mediator in mediators:
        if mediator.rows == (0, size):
            mediator.rows = None  # the whole batch: nothing to cut
    if model._edits:  # persistent edits run first, as bodies of their own
        edits = [Mediator(e.body.code, e.fresh_namespace(), None) for e in model._edits]
        mediators = edits + mediators
    interleaver = Interleaver(mediators, size)
    for cache in tracer.pending_caches:
        start_cache(interleaver, cache)
    interleaver.stop_when_done = backend.stops_early
    tracer.result = interleaver.run(model._router, lambda: backend.call(tracer, args, kwargs))


def _mediator(
    body: Body, namespace: dict, rows: tuple[int, int] | None, deferred: bool, steppable: bool
) -> Mediator:
    """The mediator that runs `body`: a stepped one (no greenlet) where the body and the
    model allow it (`steppable`: see `NNsight._tree_changed`).

    A stepped body stores names as globals, plain dict writes, as into a trace's
    `Namespace`; an invoke's `Layer` must see its writes, so invokes run in greenlets.
    """
    stepped = body.stepped
    if (
        stepped is not None
        and CONFIG.APP.STEPPED
        and steppable
        and not deferred
        and isinstance(namespace, Namespace)
        and can_step(stepped, namespace)
    ):
        return SteppedMediator(stepped.code, namespace, rows)
    return Mediator(body.code, namespace, rows, deferred=deferred)


HELPERS = helpers(save)  # `save` marks a value in every running trace, so one dict serves all
LOCAL = LocalBackend()
