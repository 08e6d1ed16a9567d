"""`NNsight`: wrap any `torch.nn.Module` so that its internals can be traced."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from ..engine.aliases import Rename
from ..engine.bytecode import following
from ..engine.edits import Editor
from ..engine.envoy import Envoy
from ..engine.eproperty import has_eproperties
from ..engine.hooks import Router
from ..engine.scan import SCAN
from ..engine.session import Session
from ..engine.tracer import Backend, Tracer
from ..errors import TracingError
from . import servers


class NNsight(Envoy):
    """A traceable model: the root envoy of `module`.

    Keyword arguments of `trace` with no positional input are the model's input
    (`model.trace(pixel_values=x)`); subclasses whose keywords are settings say so
    with `_kwargs_are_input = False`.

    Args:
        module: any PyTorch module. It is not copied or changed; a trace only
            routes its calls while the trace runs.
        rename: extra names for modules, `{path or module class: alias or [aliases]}`,
            e.g. `{"transformer.h": "layers", "attn": "self_attn"}`; an alias is the
            same envoy as the module it names (see `engine.aliases`).
        envoys: the Envoy subclass for each module: one class for all, or a dict keyed
            by module class or by path suffix (`"attn"`, `"layers.*"`).

    Raises:
        TypeError: `module` is not a `torch.nn.Module`.
        TracingValueError: an alias would hide a submodule or an attribute.

    Example:
        >>> model = NNsight(torch.nn.Sequential(torch.nn.Linear(5, 10), torch.nn.Linear(10, 2)))
        >>> with model.trace(torch.rand(1, 5)):
        ...     hidden = model[0].output.save()
    """

    _kwargs_are_input = True

    def __init__(
        self, module: nn.Module, *, rename: Rename | None = None, envoys: Any = None
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"NNsight wraps a torch.nn.Module, got {type(module).__name__}")
        super().__init__(module, "model", rename=rename, envoys=envoys)
        self._tree_changed()
        object.__setattr__(self, "_edits", [])

    @property
    def _model(self) -> nn.Module:
        """The wrapped module itself."""
        return self._module

    def _rebind(self, module: nn.Module) -> None:
        super()._rebind(module)
        self._tree_changed()

    def _tree_changed(self) -> None:
        """Route the modules the envoy tree has now (parents first), once each; note whether
        a body may run stepped (not when an envoy has an `eproperty`: reading one is no
        `.output` that a stepped body's rewrite can see)."""
        envoys = self.modules()
        modules = [(envoy._path, envoy._module) for envoy in reversed(envoys)]
        object.__setattr__(self, "_router", Router(modules))
        steppable = not any(has_eproperties(type(envoy)) for envoy in envoys)
        object.__setattr__(self, "_steppable", steppable)

    def trace(
        self,
        *inputs: Any,
        remote: bool | str = False,
        blocking: bool = True,
        timeout: float | None = None,
        backend: Backend | None = None,
        trace: bool = True,
        fn: Callable[..., Any] | None = None,
        tracer_cls: type[Tracer] = Tracer,
        **kwargs: Any,
    ) -> Any:
        """Run the model on `inputs` with the `with` block's body interleaved.

        Args:
            *inputs: the model's input; leave empty and use `tracer.invoke(...)` for several.
            remote: run on a model server: True for `CONFIG.API.HOST`, a URL
                ("http://host:port") for that server, or "local" for a dry run here
                through the server's own checks and execution path.
            blocking: with `remote`, wait for the result (False: return at once; the
                handle is `tracer.backend`, with `.status()` and `.wait()`).
            timeout: with `remote`, the most seconds to wait for the result.
            backend: what runs the trace (default: this process).
            trace: False runs the model at once, with its persistent edits, and returns
                what it returned (no body: `model.trace(x, trace=False)`).
            fn: a method of this model to run instead of its forward, called with the
                inputs (`model.trace(x, fn=model.run)`; see `traceable`).
            tracer_cls: the class of the tracer, a subclass of `Tracer`.
            **kwargs: passed to the model's forward call.

        Returns:
            The tracer, to use as a context manager (with `trace=False`: the model's output).

        Raises:
            TypeError: `fn` is no method of this model, or `tracer_cls` no `Tracer` class.
        """
        if remote:
            backend = servers.remote_backend(remote, {"blocking": blocking, "timeout": timeout})
        if fn is not None:
            kwargs["entry"] = _entry(self, fn)
        tracer = _checked(tracer_cls, Tracer, "trace")(self, *inputs, backend=backend, **kwargs)
        if trace:
            return tracer
        with tracer:
            pass
        return tracer.result

    def scan(self, *inputs: Any, remote: bool | str = False, **kwargs: Any) -> Tracer:
        """A trace on fake tensors: shapes and dtypes without computing or reading weights.

        Example:
            >>> with llm.scan("Hello"):
            ...     width = nnsight.save(llm.transformer.h[0].output.shape[-1])
        """
        backend: Backend = SCAN
        if remote:
            options: dict[str, Any] = {"scan": True}
            options.update((k, kwargs.pop(k)) for k in ("blocking", "timeout") if k in kwargs)
            backend = servers.remote_backend(remote, options)
        return Tracer(self, *inputs, backend=backend, **kwargs)

    def session(
        self,
        *,
        remote: bool | str = False,
        blocking: bool = True,
        timeout: float | None = None,
        tracer_cls: type[Session] = Session,
    ) -> Session:
        """Several traces whose variables flow from one to the next without `.save()`.

        Only saved values leave the session; with `remote`, the whole session is one
        request to the server, and unsaved values never travel. `tracer_cls` is the
        session's class (a subclass of `Session`).

        Example:
            >>> with llm.session(remote=True):
            ...     with llm.trace("The Eiffel Tower is in"):
            ...         paris = llm.transformer.h[6].output
            ...     with llm.trace("The Colosseum is in"):
            ...         llm.transformer.h[6].output[:] = paris
            ...         patched = llm.lm_head.output.save()
        """
        cls = _checked(tracer_cls, Session, "session")
        if not remote:
            return cls(self)
        options = {"blocking": blocking, "timeout": timeout}
        return cls(self, servers.remote_backend(remote, options))

    def edit(self, *, inplace: bool = False) -> Editor:
        """Record interventions that apply to every later trace.

        `with model.edit() as edited:` binds the edited model; nnsight 0.8's
        `with model.edit() as (tracer, edited):` binds the edit's tracer too (its
        `tracer.iter` repeats an edit per generation step).

        Args:
            inplace: edit this model; otherwise the block gives an edited shallow copy.

        Example:
            >>> with llm.edit() as edited:
            ...     llm.transformer.h[-1].output[:, -1, :] = hidden
        """
        return Editor(self, inplace)

    def clear_edits(self) -> None:
        """Remove every persistent edit of this model."""
        self._edits.clear()

    # -- how this kind of model takes input (overridden by LanguageModel) ------

    def _prepare_input(self, *args: Any, **kwargs: Any) -> tuple[tuple[tuple, dict], int]:
        """One invoke's input as (args, kwargs), and how many batch rows it has."""
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return (args, kwargs), value.shape[0]
        return (args, kwargs), 1

    def _batch(self, prepared: list[tuple[tuple, dict]]) -> tuple[tuple, dict]:
        """The invokes' inputs as one call: tensors concatenated along the batch dimension."""
        if len(prepared) == 1:
            return prepared[0]
        argses = [args for args, _ in prepared]
        if len({len(a) for a in argses}) != 1:
            raise TracingError("every invoke must pass the same number of positional inputs")
        args = tuple(_concat(column) for column in zip(*argses, strict=True))
        keys = prepared[0][1].keys()
        kwargs = {k: _concat([kw[k] for _, kw in prepared]) for k in keys}
        return args, kwargs

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the model (overridden for generation and other entry points)."""
        return self._module(*args, **kwargs)


Envoy.root_class = NNsight  # `Envoy(module)` is a model, as nnsight's root envoy is

Method = TypeVar("Method", bound=Callable[..., Any])


def traceable(method: Method) -> Method:
    """Make a method of a model class a way to trace it, as `trace` is for its forward.

    `with model.run(x):` traces the call `model.run(x)`: the body runs alongside it,
    reading the modules it calls (`model.trace(x, fn=model.run)`). Called without a
    `with`, also inside a trace body, the method just runs.

    Args:
        method: a method of an `NNsight` (or `Envoy`) subclass.

    Returns:
        The method, which gives a tracer when it opens a `with` block.

    Example:
        >>> class Twice(NNsight):
        ...     @traceable
        ...     def run(self, x):
        ...         return self._module(self._module(x))
        >>> with Twice(torch.nn.Linear(4, 4)).run(torch.rand(1, 4)) as tracer:
        ...     ...
    """

    @functools.wraps(method)
    def call(self: NNsight, *args: Any, **kwargs: Any) -> Any:
        after = following(sys._getframe(1), 1)
        if after and after[0].opname in _WITH_OPS:
            return self.trace(*args, entry=method.__name__, **kwargs)
        return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


_WITH_OPS = frozenset(("BEFORE_WITH", "BEFORE_ASYNC_WITH", "SETUP_WITH", "LOAD_SPECIAL"))


def _entry(model: NNsight, fn: Callable[..., Any]) -> str:
    """The name of `fn`, a method of `model`, for the tracer to call it by."""
    name = getattr(fn, "__name__", "")
    if getattr(fn, "__self__", None) is not model or not callable(getattr(model, name, None)):
        raise TypeError(
            f"`trace(..., fn=...)` takes a method of the traced model (`model.trace(x, "
            f"fn=model.run)`), got {fn!r}; to run other code, call it in a method of the "
            "model's class (see `nnsight_lab.traceable`)."
        )
    return name


def _checked(cls: Any, base: type, what: str) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(
            f"`{what}(..., tracer_cls=...)` takes a subclass of nnsight_lab's `{base.__name__}`"
            f" ({base.__module__}), got {cls!r}."
        )
    return cls


def _concat(values: list | tuple) -> Any:
    if all(isinstance(v, torch.Tensor) for v in values):
        return torch.cat(values)
    first = values[0]
    if any(v is not first and v != first for v in values):
        raise TracingError(
            "invokes of one trace are run as one batch, so their non-tensor inputs must be "
            f"equal; got {values!r}"
        )
    return first
