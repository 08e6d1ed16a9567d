"""`eproperty`: a custom value of an Envoy subclass, read and written like `.output`.

Reading `envoy.<name>` in a trace body waits, as `.output` does, until the model
reaches the location `"{envoy.path}.{key}"` and gives the value there through
the decorated stub, the *preprocess* (`key="output"` shares the module's output
location, `key="input"` its `(args, kwargs)`). Writing runs the *postprocess*
(if any) and replaces the value. A *transform* maps an edited view (the
preprocess's copy) back to the location's value: it is written back before the
body's next read or write of a module value. A value that no module produces is
served by its producer with `eproperty.provide(envoy, value)`.

    class Heads(Envoy):
        @eproperty(key="output", description="per-head view")
        def heads(self, value):
            b, s, h = value.shape
            return value.view(b, s, 4, h // 4)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import TracingValueError
from .mediator import _access, current_mediator

Stub = Callable[..., Any]
_KINDS = {"inputs": "input"}  # `.inputs` and `.input` share one location


class eproperty:  # noqa: N801  (nnsight's name, used as a decorator)
    """A hookable value on an Envoy subclass (see the module docstring).

    Args:
        stub: the preprocess, `(self, value) -> what the user reads` (bare `@eproperty`).
        key: the location's last part (default: the stub's name).
        description: shown in the envoy's repr as `(name): description`.

    Raises:
        TracingValueError: the value is read or written outside a trace body.

    Example:
        >>> class Logits(Envoy):
        ...     @eproperty(key="output", description="the output, doubled")
        ...     def doubled(self, value):
        ...         return value * 2
    """

    def __init__(
        self, stub: Stub | None = None, *, key: str | None = None, description: str | None = None
    ) -> None:
        self.key = key
        self.description = description
        self.name = ""
        self.preprocess: Stub | None = None
        self._postprocess: Stub | None = None
        self._transform: Stub | None = None
        if stub is not None:
            self._use(stub)

    def __call__(self, stub: Stub) -> eproperty:
        if self.preprocess is not None:
            raise TypeError(f"eproperty {self.name!r} already has its stub")
        self._use(stub)
        return self

    def _use(self, stub: Stub) -> None:
        self.preprocess = stub
        self.name = stub.__name__
        self.key = self.key or stub.__name__
        self.__doc__ = stub.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def postprocess(self, fn: Stub) -> eproperty:
        """Decorate `(self, value) -> value` run on a written value before it is swapped in."""
        self._postprocess = fn
        return self

    def transform(self, fn: Stub) -> eproperty:
        """Decorate `(self, view[, raw]) -> value`: the read view, edited, as the location's value."""
        self._transform = fn
        return self

    @property
    def kind(self) -> str:
        return _KINDS.get(self.key or self.name, self.key or self.name)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        path = obj.path
        mediator = body_mediator(path, self.kind)
        pending = getattr(mediator, "_pending_view", None)
        if pending is not None and pending[0] is self and pending[1] == _where(mediator, path):
            return pending[3]  # the same view again: one statement may read it twice
        flush(mediator)
        raw = mediator.get(path, self.kind)
        view = self.preprocess(obj, raw) if self.preprocess is not None else raw
        if self._transform is not None:
            mediator._pending_view = (self, _where(mediator, path), obj, view, raw)
        return view

    def __set__(self, obj: Any, value: Any) -> None:
        path = obj.path
        mediator = body_mediator(path, self.kind)
        flush(mediator)
        if self._postprocess is not None:
            value = self._postprocess(obj, value)
        mediator.set(path, self.kind, value)

    def provide(self, obj: Any, value: Any) -> Any:
        """Serve `value` at this eproperty's location of `obj` to the waiting bodies.

        Call it where the value is computed, inside the model's run.

        Returns:
            The value, as a body left it (replaced, or edited in place).
        """
        interleaver = obj.root._router.interleaver
        if interleaver is None:
            return value
        index = max(interleaver.started.get(obj.path, 0) - 1, 0)
        return interleaver.handle(f"{obj.path}.{self.kind}.{index}", value)

    def __str__(self) -> str:
        annotation = ""
        if self.preprocess is not None:
            returns = inspect.signature(self.preprocess).return_annotation
            if returns is not inspect.Signature.empty:
                shown = returns if isinstance(returns, str) else returns.__name__
                annotation = " -> " + shown.rpartition(".")[2]
        return f"({self.name}){annotation}: {self.description}"


def body_mediator(path: str, kind: str) -> Any:
    """The running body's mediator, for reading or writing `path.kind`.

    Raises:
        TracingValueError: no trace body runs now (a `ValueError`, as nnsight's).
    """
    mediator = current_mediator(path, kind, optional=True)
    if mediator is None:
        raise TracingValueError(
            f"Cannot access `{_access(path, kind)}` outside of interleaving: it can only be used inside a "
            "trace body, inside `with model.trace(input):` (or inside "
            "`with tracer.invoke(input):` when the trace has invokes)."
        )
    return mediator


def flush(mediator: Any) -> None:
    """Write back the view an eproperty with a transform gave this body, if any."""
    pending = mediator.__dict__.pop("_pending_view", None)
    if pending is None:
        return
    prop, (path, iteration), obj, view, raw = pending
    interleaver = mediator.interleaver
    if interleaver is None or interleaver.location != f"{path}.{prop.kind}.{iteration}":
        return  # the model has moved on (the body waited elsewhere): nothing to write into
    fn = prop._transform
    takes_raw = len(inspect.signature(fn).parameters) >= 3
    value = fn(obj, view, raw) if takes_raw else fn(obj, view)
    mediator.set(path, prop.kind, value)


def _where(mediator: Any, path: str) -> tuple[str, int]:
    return path, mediator.iteration


def has_eproperties(cls: type) -> bool:
    """Whether `cls` (an Envoy class) or a base of it defines an `eproperty`."""
    found = _HAS_EPROPERTIES.get(cls)
    if found is None:
        values = (v for klass in cls.__mro__ for v in vars(klass).values())
        found = _HAS_EPROPERTIES[cls] = any(isinstance(v, eproperty) for v in values)
    return found


_HAS_EPROPERTIES: dict[type, bool] = {}  # per class (a dict: mypy refuses functools.cache)
