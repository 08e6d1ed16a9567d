"""`Router`: routing a model's module calls through the running interleaver.

Each module's `forward` is shadowed, only while a trace runs, by an instance
attribute that counts the module's calls (started, finished: what out-of-order
detection reads) and passes its input and output to `Interleaver.handle` when
a body waits on that module. The wrappers are made once per model and reused,
so installing is one dict write per module; removing restores exactly what was
there before (an instance `forward` set by accelerate, or none), in `finally`.
The wrapper runs on every module call: keep it lean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from .source import source_forward

if TYPE_CHECKING:
    from .interleaver import Interleaver

_MISSING = object()


class Router:
    """The routing wrappers of one model's modules.

    Args:
        modules: (path, module) for every module of the model, parents first.
    """

    def __init__(self, modules: list[tuple[str, nn.Module]]) -> None:
        self.modules = modules
        self.interleaver: Interleaver | None = None
        self._wrappers: dict[str, tuple[Any, Callable]] = {}  # path -> (original, wrapper)

    def install(self, interleaver: Interleaver) -> Callable[[], None]:
        """Route every module call to `interleaver` until the returned undo is called."""
        previous_interleaver, self.interleaver = self.interleaver, interleaver
        saved = []
        wrappers = self._wrappers
        try:
            for path, module in self.modules:
                state = module.__dict__
                original = state.get("forward", _MISSING)
                saved.append((state, original))
                cached = wrappers.get(path)
                if cached is not None and cached[0] is original:
                    state["forward"] = cached[1]
                else:
                    state["forward"] = self._wrapper(path, module, original)
        except BaseException:
            self._restore(saved, previous_interleaver)
            raise
        return lambda: self._restore(saved, previous_interleaver)

    def call_unrouted(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        """Call `module` (and its submodules) as outside a trace: nothing counted or offered."""
        routed = [m.__dict__ for m in module.modules() if "__routed__" in _attrs(m)]
        wrappers = [state["forward"] for state in routed]
        for state, wrapper in zip(routed, wrappers, strict=True):
            state["forward"] = wrapper.__routed__
        try:
            return module(*args, **kwargs)
        finally:
            for state, wrapper in zip(routed, wrappers, strict=True):
                state["forward"] = wrapper

    def _restore(self, saved: list, interleaver: Interleaver | None) -> None:
        for state, previous in reversed(saved):
            if previous is _MISSING:
                state.pop("forward", None)
            else:
                state["forward"] = previous
        self.interleaver = interleaver

    def _wrapper(self, path: str, module: nn.Module, original: Any) -> Callable:
        if getattr(original, "__routed__", None) is not None:
            return original  # a trace of this model inside a trace of it: already routed
        wrapper = _routed(self, path, module.forward, module)
        self._wrappers[path] = (original, wrapper)
        return wrapper


def _attrs(module: nn.Module) -> dict:
    return getattr(module.__dict__.get("forward"), "__dict__", {})


def _routed(router: Router, path: str, forward: Callable, module: nn.Module) -> Callable:
    inputs, outputs = f"{path}.input.", f"{path}.output."

    def routed_forward(*args, **kwargs):
        interleaver = router.interleaver
        started = interleaver.started  # type: ignore[union-attr]
        index = started.get(path, 0)
        started[path] = index + 1
        body = source_forward(module, interleaver) or forward  # `.source` used: its rewritten copy
        if path in interleaver.wanted_inputs:  # type: ignore[union-attr]
            args, kwargs = interleaver.handle(f"{inputs}{index}", (args, kwargs))  # type: ignore[union-attr]
            output = interleaver.skips.pop(path, _MISSING)  # type: ignore[union-attr]
            if output is _MISSING:  # not skipped by `module.skip(value)`
                output = body(*args, **kwargs)
        else:
            output = body(*args, **kwargs)
        if path in interleaver.wanted_outputs:  # type: ignore[union-attr]
            output = interleaver.handle(f"{outputs}{index}", output)  # type: ignore[union-attr]
        interleaver.finished[path] = index + 1  # type: ignore[union-attr]
        return output

    routed_forward.__routed__ = forward  # type: ignore[attr-defined]
    # transformers reads `inspect.signature(model.forward)` to decide what to pass (e.g.
    # `logits_to_keep` in generate): the wrapper must show the forward's own signature.
    routed_forward.__wrapped__ = forward  # type: ignore[attr-defined]
    return routed_forward
