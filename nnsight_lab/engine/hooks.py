"""`Router`: routing a model's module calls through the running interleaver.

Each module's `forward` is shadowed, only while a trace runs, by an instance
attribute that counts the module's calls (started, finished: what out-of-order
detection reads) and passes its input and output to `Interleaver.handle` when
a body waits on that module. The wrappers are made once per model and reused,
so installing is one dict write per module; removing restores exactly what was
there before (an instance `forward` set by accelerate, or none), in `finally`.
The wrapper runs on every module call: keep it lean.

One trace at a time per model: `Router.lock` (re-entrant, so a trace may run inside
another on the same thread) is held while a trace runs, so traces from several
threads (a model server) take turns; a plain call of the model from another thread
meanwhile runs its modules' own `forward`, unseen by the trace.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from itertools import repeat
from operator import methodcaller
from typing import TYPE_CHECKING, Any

from torch import nn

from .batching import RowSkips
from .source import source_forward, sourced_modules

if TYPE_CHECKING:
    from .interleaver import Interleaver

_MISSING = object()
get_ident = threading.get_ident


class _Plan:
    """What routing one model writes: every module's `forward` entry, before and during.

    Installing and restoring run per trace over every module (dozens in a transformer),
    so their loops are `map`s, run in C. Made once per model, and again only when a
    module's `forward` entry is no longer the one it was made from (see `current`).
    """

    def __init__(
        self, paths: list[str], states: list[dict], originals: list, wrappers: list
    ) -> None:
        self.states, self.wrappers = states, wrappers  # module __dict__s, routing wrappers
        self.zeros = dict.fromkeys(paths, 0)  # calls started per module, before any
        self.originals = tuple(originals)  # their `forward` entries before (_MISSING: none)
        self._unset = [s for s, o in zip(states, originals, strict=True) if o is _MISSING]
        self._reset = [(s, o) for s, o in zip(states, originals, strict=True) if o is not _MISSING]

    def current(self) -> bool:
        """Whether every module's `forward` entry is still the one this plan was made from."""
        return tuple(map(_forward_entry, self.states)) == self.originals

    def install(self) -> None:
        for _ in map(dict.__setitem__, self.states, repeat("forward"), self.wrappers):
            pass

    def restore(self) -> None:
        for _ in map(dict.pop, self._unset, repeat("forward"), repeat(None)):
            pass
        for state, original in self._reset:  # an instance forward set by accelerate, say
            state["forward"] = original


_forward_entry = methodcaller("get", "forward", _MISSING)


class _Routing:
    """What the routing wrappers read: the interleaver they serve, its thread, and the
    interleaver's tables they read on every call (one attribute each, no lookups).

    The wrappers hold this, not the `Router` (which holds them): no reference cycle
    through a model's modules, so a model is freed when its last reference goes.
    """

    __slots__ = ("interleaver", "thread", "started", "finished", "inputs", "outputs")

    def __init__(self) -> None:
        self.interleaver: Interleaver | None = None
        self.thread: int | None = None  # the thread whose trace the wrappers serve

    def serve(self, interleaver: Interleaver | None) -> None:
        self.interleaver = interleaver
        if interleaver is not None:
            self.started, self.finished = interleaver.started, interleaver.finished
            self.inputs, self.outputs = interleaver.wanted_inputs, interleaver.wanted_outputs


class Router:
    """The routing wrappers of one model's modules.

    Args:
        modules: (path, module) for every module of the model, parents first.
    """

    def __init__(self, modules: list[tuple[str, nn.Module]]) -> None:
        self.modules = modules
        self.lock = threading.RLock()  # held by the trace that runs on this model
        self.routing = _Routing()
        self._wrappers: dict[str, tuple[Any, Callable]] = {}  # path -> (original, wrapper)
        self._plan: _Plan | None = None

    @property
    def interleaver(self) -> Interleaver | None:
        """The interleaver of the trace running on this model (None: none runs)."""
        return self.routing.interleaver

    def install(self, interleaver: Interleaver) -> Callable[[], None]:
        """Route every module call to `interleaver` until the returned undo is called."""
        plan = self._plan
        if plan is None or not plan.current():  # first trace, a forward replaced, or nested
            plan = self._plan = self._make_plan()
        routing = self.routing
        previous_interleaver = routing.interleaver
        interleaver.started = {**plan.zeros, **interleaver.started}  # the wrappers index it
        routing.serve(interleaver)
        routing.thread = threading.get_ident()
        try:
            plan.install()
        except BaseException:
            self._restore(plan, previous_interleaver)
            raise
        return lambda: self._restore(plan, previous_interleaver)

    def _make_plan(self) -> _Plan:
        paths, states, originals, wrappers = [], [], [], []
        for path, module in self.modules:
            state = module.__dict__
            original = state.get("forward", _MISSING)
            cached = self._wrappers.get(path)
            if cached is not None and cached[0] is original:
                wrapper = cached[1]
            else:
                wrapper = self._wrapper(path, module, original)
            paths.append(path)
            states.append(state)
            originals.append(original)
            wrappers.append(wrapper)
        return _Plan(paths, states, originals, wrappers)

    def call_unrouted(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        """Call `module` (and its submodules) as outside a trace: nothing counted or offered."""
        with self.lock:  # it writes the modules' `forward` entries: not beside a trace
            routed = [m.__dict__ for m in module.modules() if "__routed__" in _attrs(m)]
            wrappers = [state["forward"] for state in routed]
            for state, wrapper in zip(routed, wrappers, strict=True):
                state["forward"] = wrapper.__routed__
            try:
                return module(*args, **kwargs)
            finally:
                for state, wrapper in zip(routed, wrappers, strict=True):
                    state["forward"] = wrapper

    def _restore(self, plan: _Plan, interleaver: Interleaver | None) -> None:
        plan.restore()
        self.routing.serve(interleaver)
        if interleaver is None:
            self.routing.thread = None

    def _wrapper(self, path: str, module: nn.Module, original: Any) -> Callable:
        if getattr(original, "__routed__", None) is not None:
            return original  # a trace of this model inside a trace of it: already routed
        wrapper = _routed(self.routing, path, module.forward, module)
        self._wrappers[path] = (original, wrapper)
        return wrapper


def _attrs(module: nn.Module) -> dict:
    return getattr(module.__dict__.get("forward"), "__dict__", {})


def _routed(routing: _Routing, path: str, forward: Callable, module: nn.Module) -> Callable:
    outputs = f"{path}.output."

    def routed_forward(*args, **kwargs):
        if get_ident() != routing.thread:  # another thread calls the model: not the trace's
            return forward(*args, **kwargs)
        started = routing.started
        index = started[path]
        started[path] = index + 1
        if path in routing.inputs or sourced_modules:  # a body waits on it, or `.source` used
            output = _served_call(routing.interleaver, path, index, module, forward, args, kwargs)
        else:
            output = forward(*args, **kwargs)
        if path in routing.outputs:  # (a body may start waiting on it during the call)
            output = routing.interleaver.handle(f"{outputs}{index}", output)  # type: ignore[union-attr]
        routing.finished[path] = index + 1
        return output

    routed_forward.__routed__ = forward  # type: ignore[attr-defined]
    # transformers reads `inspect.signature(model.forward)` to decide what to pass (e.g.
    # `logits_to_keep` in generate): the wrapper must show the forward's own signature.
    routed_forward.__wrapped__ = forward  # type: ignore[attr-defined]
    return routed_forward


def _served_call(
    interleaver: Any, path: str, index: int, module: nn.Module, forward: Callable, args, kwargs
) -> Any:
    """A module call whose input a body waits on, or on a model where `.source` was used:
    offer the input, then run the forward (its rewritten copy where sourced), or skip it."""
    body = (sourced_modules and source_forward(module, interleaver)) or forward
    if path not in interleaver.wanted_inputs:
        return body(*args, **kwargs)
    args, kwargs = interleaver.handle(f"{path}.input.{index}", (args, kwargs))
    output = interleaver.skips.pop(path, _MISSING)
    if output is _MISSING:  # not skipped by `module.skip(value)`
        return body(*args, **kwargs)
    if type(output) is RowSkips:  # skipped by some invokes: for their rows
        return output.output(lambda: body(*args, **kwargs))
    return output
