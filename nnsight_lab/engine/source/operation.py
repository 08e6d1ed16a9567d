"""What the trace body sees of `.source`: a listing, and one envoy per operation.

`module.source` is a `SourceView`: printing it lists the forward with each
operation's name (calls and assignments); `module.source.<name>` is an
`OperationEnvoy` whose `.output`, `.input` and `.inputs` are read and assigned,
and `.skip(value)` used, exactly like a module's (the mediator's `get` / `set` /
`skip`, at locations under `"<module path>.source.<name>"`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from torch import nn

from ...errors import NotReachedError, OutOfOrderError, SourceNotAvailable, TracingError
from ..inputs import FirstInput
from ..mediator import _access, current_mediator
from .listing import excerpt, listing, window
from .probe import Callee, NoSourceError, Scope, is_sourced, module_source
from .rewrite import Compiled


def source_view(module: Any, path: str) -> SourceView:
    """`module.source` for the envoy of `module` at `path` (see `Envoy.source`).

    Raises:
        TracingError: `module` is not a module.
        SourceNotAvailable: its forward has no Python source.
        OutOfOrderError: first used in a trace after the module's call had started.
    """
    if not isinstance(module, nn.Module):
        raise TracingError(
            f"`{_access(path, 'source')}`: .source lists the forward of a module, and "
            f"{type(module).__name__} is not a torch.nn.Module."
        )
    first_use = not is_sourced(module)
    try:
        source = module_source(module, path)
    except NoSourceError as error:
        raise SourceNotAvailable(
            f"`{_access(path, 'source')}` is not available: {error}. Read the module's "
            "`.input` / `.output` instead, or `.source` of its submodules."
        ) from None
    mediator = current_mediator(path, "source", optional=True)
    if first_use and mediator is not None and mediator.interleaver is not None:
        if mediator.interleaver.started.get(path, 0) > mediator.iteration:
            raise OutOfOrderError(
                f"`{_access(path, 'source')}` was first used after the model had started "
                f"`{_access(path, '')}`, so this call runs without its operations exposed. Use "
                "`.source` before reading anything inside the module (or once before the trace)."
            )
    assert source.compiled is not None
    return SourceView(source, source.compiled, path)


class SourceView:
    """The operations of one function: print it to list them, get one by name.

    `names` lists the operation names in execution order; iterating gives their
    envoys in that order.

    Args:
        scope: where the operations are probed.
        compiled: the rewritten function (names, lines).
        owner: path of what this is the source of (a module, or an operation).
    """

    _scope: Scope
    _compiled: Compiled
    _owner: str

    def __init__(self, scope: Scope, compiled: Compiled, owner: str) -> None:
        self.__dict__.update(_scope=scope, _compiled=compiled, _owner=owner)

    def __getattr__(self, name: str) -> OperationEnvoy:
        if name.startswith("__"):
            raise AttributeError(name)
        compiled: Compiled = self.__dict__["_compiled"]
        if name in compiled.rows:
            return OperationEnvoy(self.__dict__["_scope"], name, compiled)
        close = difflib.get_close_matches(name, compiled.names, n=5, cutoff=0.5)
        hint = f" (close names: {', '.join(close)})" if close else ""
        available = ", ".join(compiled.names) or "(none)"
        raise AttributeError(
            f"`{_access(self.__dict__['_owner'], 'source')}` has no operation {name!r}{hint}; "
            f"available: {available}. print() the .source to see each operation's line."
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The operation names, in execution order (calls and assignments)."""
        return self._compiled.names

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"cannot assign {name!r} on a .source listing: assign an operation's value, "
            f"e.g. `.source.{name}.output = value`"
        )

    def __dir__(self) -> list[str]:
        return list(self._compiled.names)

    def __iter__(self) -> Iterator[OperationEnvoy]:
        return (OperationEnvoy(self._scope, name, self._compiled) for name in self._compiled.names)

    def __len__(self) -> int:
        return len(self._compiled.names)

    def __str__(self) -> str:
        return listing(self._compiled)

    __repr__ = __str__


class OperationEnvoy(FirstInput):
    """One call or assignment inside a forward: `module.source.<name>`.

    Inside a trace body `.output` is what the call returned, `.inputs` its
    `(args, kwargs)` and `.input` its first argument; assigning any of them
    replaces the value the forward goes on with, and `.skip(value)` makes the call
    return `value` without running. For an assignment (`h = v`: `h_0`) `.output`
    and `.input` are the value bound, and `.skip(value)` binds `value` instead.
    Reads and writes follow the model's execution order, as for modules.

    Example:
        >>> with llm.trace("Hello"):
        ...     attn = llm.transformer.h[0].attn.source.attention_interface_0.output.save()
    """

    __slots__ = ("_scope", "_name", "_compiled", "_path")
    _block = False  # as `Envoy._block`: an operation is no transformers block

    def __init__(self, scope: Scope, name: str, compiled: Compiled) -> None:
        self._scope, self._name, self._compiled = scope, name, compiled
        self._path = scope.prefix + name

    @property
    def name(self) -> str:
        """The operation's name in its `.source` (`self_c_attn_0`)."""
        return self._name

    @property
    def output(self) -> Any:
        """What the call returned, or the value assigned (in this call of the module)."""
        return self._get("output", "output")

    @output.setter
    def output(self, value: Any) -> None:
        self._set("output", "output", value)

    @property
    def inputs(self) -> tuple[tuple, dict]:
        """The call's arguments: `(args, kwargs)` (a method's `self` is not among them)."""
        return self._get("input", "inputs")

    @inputs.setter
    def inputs(self, value: tuple[tuple, dict]) -> None:
        args, kwargs = value
        self._set("input", "inputs", (tuple(args), dict(kwargs)))

    def skip(self, value: Any) -> None:
        """Do not make this call in this call of the module; use `value` as what it
        returned (for an assignment: bind `value` instead).

        Args:
            value: the output to use instead, e.g. an earlier operation's `.output`.

        Raises:
            TracingError: `value` is an envoy (pass its `.output`).
        """
        if isinstance(value, (OperationEnvoy, nn.Module)) or hasattr(value, "_module"):
            raise TracingError(
                f"`{_access(self._path, 'skip')}(value)` takes the value to use instead of "
                f"the call, got {type(value).__name__}: pass a value, e.g. an envoy's `.output`."
            )
        mediator = current_mediator(self._path, "skip")
        self._wait(mediator, lambda: mediator.skip(self._path, value), "skip")

    @property
    def source(self) -> SourceView:
        """The operations of the function this call calls, one level down.

        Only inside a trace body: what is called is known when the call runs (it is
        often a variable, such as an attention implementation chosen at run time).

        Raises:
            SourceNotAvailable: outside a trace, on an assignment, or the callee is a
                module (use its own `.source`), a builtin, or has no Python source.
        """
        if self._name in self._compiled.assignments:
            raise SourceNotAvailable(
                f"`{_access(self._path, 'source')}`: `{self._name}` is an assignment "
                f"(`{excerpt(self._compiled, self._name)}`), not a call: there is no callee to "
                "drill into. Read its `.output`, or `.source` of the call that made the value."
            )
        mediator = current_mediator(self._path, "source", optional=True)
        if mediator is None:
            raise SourceNotAvailable(
                f"`{_access(self._path, 'source')}`: recursive `.source` is only available "
                "inside a trace, where the function this operation calls is known (it is "
                "often a variable). Use it inside `with model.trace(...):`."
            )
        callee: Callee = self._scope.callee(self._name)
        if not self.callee_known():
            fn = self._wait(mediator, lambda: mediator.get(self._path, "fn"), "source")
            try:
                callee.prepare(fn, mediator.interleaver)
            except NoSourceError as error:
                raise SourceNotAvailable(
                    f"`{_access(self._path, 'source')}` is not available: {error}."
                ) from None
        assert callee.compiled is not None
        return SourceView(callee, callee.compiled, self._path)

    def callee_known(self) -> bool:
        """Whether `.source` can answer without waiting for the call: the operations of what
        it calls are known in the running trace (a body of it drilled in already), or it is
        an assignment (whose `.source` raises)."""
        if self._name in self._compiled.assignments:
            return True
        mediator = current_mediator(self._path, "source", optional=True)
        interleaver = mediator.interleaver if mediator is not None else None
        return self._scope.callee(self._name).known_in(interleaver)

    def not_executed(self, access: str) -> NotReachedError:
        """The error for `access` (`output`, ...) when the forward ended without this call."""
        return NotReachedError(
            f"`{_access(self._path, access)}`: the operation `{self._name}` "
            f"(`{excerpt(self._compiled, self._name)}`) did not execute: the forward pass "
            "finished without making this call, so there is nothing to read. It may sit in "
            "a branch that did not run for this input; print(...source) shows every "
            "operation with its line."
        )

    def _get(self, kind: str, access: str) -> Any:
        mediator = current_mediator(self._path, access)
        return self._wait(mediator, lambda: mediator.get(self._path, kind), access)

    def _set(self, kind: str, access: str, value: Any) -> None:
        mediator = current_mediator(self._path, access)
        self._wait(mediator, lambda: mediator.set(self._path, kind, value), access)

    def _wait(self, mediator: Any, wait: Any, access: str) -> Any:
        """`wait()`, with the engine's end-of-forward error told in terms of operations."""
        try:
            return wait()
        except NotReachedError:
            if getattr(mediator, "deferred", False):
                raise  # a body that runs after the model: the engine's message says why
            raise self.not_executed(access) from None

    def __repr__(self) -> str:
        return f"{_access(self._path, '')}:\n\n{window(self._compiled, self._name)}"
