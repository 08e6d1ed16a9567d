"""The model side of `.source`: rewritten forwards and the probe each call goes through.

Once a module's `.source` is used, the module is *sourced*: its forward is
rewritten once (see `rewrite`) and, inside any later trace, the routing wrapper
runs that copy instead of the original (`source_forward`); outside a trace
nothing changes. Each call site in the copy goes through a probe that does
for one operation what the routing wrapper does for a module: counts its
calls (started / finished, for out-of-order detection) and, only when a body
waits on it, offers its inputs and output to `Interleaver.handle` at
`"<module path>.source.<name>.<input|output>.<call index>"`. An operation
nobody reads costs a few dict lookups.

`.source` of an operation (`attn.source.attention_interface_0.source`) works
the same one level down: the probe also offers the callable it is about to
call at `"<op path>.fn.<index>"`, and once a body has asked for the callee's
operations the probe calls a rewritten copy of whatever it is given, under
`"<op path>.source."`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from types import CodeType, FunctionType, MethodType
from typing import TYPE_CHECKING, Any

from torch import nn

from .rewrite import Compiled, NoSourceError, build, compile_function, peel, rewrap

if TYPE_CHECKING:
    from ..interleaver import Interleaver

_COMPILED: dict[CodeType, Compiled] = {}
_SOURCED: weakref.WeakKeyDictionary[nn.Module, ModuleSource] = weakref.WeakKeyDictionary()
# The registry's own dict (of weak references): empty while no module is sourced. The
# routing wrapper tests it on every module call, where WeakKeyDictionary's len() (Python
# code) would cost more than the rest of the test.
sourced_modules: dict = _SOURCED.data  # type: ignore[attr-defined]


class Scope:
    """The operations of one rewritten function, probed under `prefix`.

    Args:
        root: the sourced module this scope belongs to (None: this is that root).
        prefix: location prefix of its operations, e.g. `"model.h.0.attn.source."`.
    """

    def __init__(self, root: ModuleSource | None, prefix: str) -> None:
        self.root: ModuleSource = root if root is not None else self  # type: ignore[assignment]
        self.prefix = prefix
        self.compiled: Compiled | None = None
        self.callees: dict[str, Callee] = {}  # operation name -> its rewritten callee
        self.op = _probe(self)

    def callee(self, name: str) -> Callee:
        """The scope of the function called through operation `name` (made on first use)."""
        callee = self.callees.get(name)
        if callee is None:
            callee = self.callees[name] = Callee(self.root, f"{self.prefix}{name}.source.")
        return callee


class ModuleSource(Scope):
    """A sourced module: its rewritten forward, and the interleaver its probes report to.

    Args:
        module: the module.
        path: its path in the model, e.g. `"model.transformer.h.0.attn"`.

    Raises:
        NoSourceError: its forward has no Python source to rewrite.
    """

    def __init__(self, module: nn.Module, path: str) -> None:
        super().__init__(None, f"{path}.source.")
        self.path = path
        self.interleaver: Interleaver | None = None
        forward = module.forward
        forward = getattr(forward, "__routed__", forward)  # read inside a trace: the original
        self.compiled, rewritten = instrument(forward, self.op)
        # Kept unbound, bound per call: the registry holds this weakly keyed by the module.
        self.method = isinstance(rewritten, MethodType) and rewritten.__self__ is module
        self.forward: Callable = _unbound(rewritten) if self.method else rewritten

    def run(self, interleaver: Interleaver, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        """Call the rewritten forward of `module` with its probes reporting to `interleaver`."""
        previous, self.interleaver = self.interleaver, interleaver
        try:
            if self.method:
                return self.forward(module, *args, **kwargs)
            return self.forward(*args, **kwargs)
        finally:
            self.interleaver = previous  # a trace nested in a body hands back the outer one


class Callee(Scope):
    """Whatever function one operation calls, rewritten for each callable it is given."""

    def __init__(self, root: ModuleSource, prefix: str) -> None:
        super().__init__(root, prefix)
        self._built: dict[Any, Callable | None] = {}  # callable's function -> rewritten copy

    def prepare(self, fn: Any) -> Compiled:
        """Rewrite `fn` (if not yet) and show its operations from now on.

        Raises:
            NoSourceError: `fn` is a module, a builtin, or has no Python source.
        """
        compiled, built = instrument(fn, self.op)
        self._built[_key(fn)] = _unbound(built)
        self.compiled = compiled
        return compiled

    def replace(self, fn: Any) -> Any:
        """The rewritten copy of `fn` to call instead of it (or `fn`, if it has none)."""
        key = _key(fn)
        if key not in self._built:
            try:
                self._built[key] = _unbound(instrument(fn, self.op)[1])
            except NoSourceError:
                self._built[key] = None
        built = self._built[key]
        if built is None:
            return fn
        return MethodType(built, fn.__self__) if isinstance(fn, MethodType) else built


def _key(fn: Any) -> Any:
    return fn.__func__ if isinstance(fn, MethodType) else fn


def _unbound(fn: Callable) -> Callable:
    return fn.__func__ if isinstance(fn, MethodType) else fn


def _probe(scope: Scope) -> Callable:
    """The `OP` function of `scope`'s rewritten code: one call site, probed."""
    root, prefix, callees = scope.root, scope.prefix, scope.callees

    def op(name: str, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        interleaver = root.interleaver
        if interleaver is None:  # a copy called outside its module's traced call
            return fn(*args, **kwargs)
        path = prefix + name
        started = interleaver.started
        index = started.get(path, 0)
        started[path] = index + 1
        if path in interleaver.wanted_inputs:
            args, kwargs = interleaver.handle(f"{path}.input.{index}", (args, kwargs))
        wanted = interleaver.wanted_outputs
        if path in wanted:  # `.output`, or `.source` asking for the callee
            fn = interleaver.handle(f"{path}.fn.{index}", fn)
        if callees:
            callee = callees.get(name)
            if callee is not None:
                fn = callee.replace(fn)
        output = fn(*args, **kwargs)
        if path in wanted:
            output = interleaver.handle(f"{path}.output.{index}", output)
        interleaver.finished[path] = index + 1
        return output

    return op


def instrument(fn: Any, op: Callable) -> tuple[Compiled, Callable]:
    """`fn` rewritten to call `op` at each call site: (its listing data, the runnable copy).

    Decorators made with `functools.wraps` are peeled and rebuilt around the copy, so
    they still run; a bound method stays bound to the same object.

    Raises:
        NoSourceError: `fn` is a module, a builtin, or has no Python source.
    """
    if isinstance(fn, nn.Module):
        raise NoSourceError(f"it calls the module {type(fn).__name__}: use that module's .source")
    receiver = None
    if isinstance(fn, MethodType):
        receiver, fn = fn.__self__, fn.__func__
    elif not isinstance(fn, FunctionType):
        call = type(fn).__call__ if callable(fn) else None  # a callable object: its method
        if not isinstance(call, FunctionType):
            raise NoSourceError(f"{fn!r} is not a Python function, so it has no source to rewrite")
        receiver, fn = fn, call
    if not isinstance(fn, FunctionType):
        raise NoSourceError(f"{fn!r} is not a Python function, so it has no source to rewrite")
    inner, chain = peel(fn)
    compiled = _COMPILED.get(inner.__code__)
    if compiled is None:
        compiled = _COMPILED[inner.__code__] = compile_function(inner)
    built = rewrap(chain, build(inner, compiled, op))
    return compiled, (built if receiver is None else MethodType(built, receiver))


def module_source(module: nn.Module, path: str) -> ModuleSource:
    """The sourced state of `module`, sourcing it now if it is not yet.

    Raises:
        NoSourceError: its forward has no Python source to rewrite.
    """
    source = _SOURCED.get(module)
    if source is None:
        source = _SOURCED[module] = ModuleSource(module, path)
    return source


def is_sourced(module: nn.Module) -> bool:
    """Whether `module`'s `.source` has been used (its traced calls run the rewritten forward)."""
    return module in _SOURCED


def source_forward(module: nn.Module, interleaver: Interleaver) -> Callable | None:
    """What the routing wrapper calls instead of `module`'s forward, or None: not sourced.

    Called on routed module calls once any module is sourced (see `sourced_modules`).
    """
    source = _SOURCED.get(module)
    if source is None:
        return None
    return partial(source.run, interleaver, module)
