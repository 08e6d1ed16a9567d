"""The model side of `.source`: rewritten forwards and the probe each call goes through.

Once a module's `.source` is used, the module is *sourced*: its forward is
rewritten once (see `rewrite`) and, inside any later trace, the routing wrapper
runs that copy instead of the original (`source_forward`); outside a trace
nothing changes. Each call site in the copy goes through a probe that does
for one operation what the routing wrapper does for a module: counts its
calls (started / finished, for out-of-order detection) and, only when a body
waits on it, offers its inputs and output to `Interleaver.handle` at
`"<module path>.source.<name>.<input|output>.<call index>"`, and skips the call
when a body gave its output (`op.skip(value)`). Each assignment's value goes
through the same steps in a second probe (its input and output are the value).
An operation nobody reads costs a few dict lookups.

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

import torch
from torch import nn

from ..batching import RowSkips
from .rewrite import Compiled, NoSourceError, build, compile_function, peel, rewrap

if TYPE_CHECKING:
    from ..interleaver import Interleaver

_MISSING: Any = object()  # no skip given: the call runs
_COMPILED: dict[CodeType, Compiled] = {}
_SOURCED: weakref.WeakKeyDictionary[nn.Module, ModuleSource] = weakref.WeakKeyDictionary()
# Empty until a module is first sourced, then `[True]`: the routing wrapper tests it on
# every module call (no module sourced: one truth test). Not the registry itself: torch
# compile guards on what the wrapper reads, and a dict of weak references that shrinks
# as sourced modules are collected breaks those guards (IndexError inside dynamo).
sourced_modules: list[bool] = []


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
        self.probes = (_probe(self), _bind_probe(self))

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
        self.origin = forward_origin(module)  # a forward set on the module later: rewrite it
        hooked = _accelerate_hooked(module, forward)
        if hooked:  # accelerate's wrapper: rewrite the forward it wraps, keep its hook
            forward = getattr(module, "_old_forward")  # noqa: B009  # not a Module attribute
        self.compiled, rewritten = instrument(forward, self.probes)
        # Kept unbound, bound per call: the registry holds this weakly keyed by the module.
        self.method = isinstance(rewritten, MethodType) and rewritten.__self__ is module
        self.forward: Callable = _unbound(rewritten) if self.method else rewritten
        if hooked:
            self.forward, self.method = _with_hook(self.forward, self.method), True

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
        self._run: weakref.ref | None = None  # the interleaver of the run `compiled` is from

    def prepare(self, fn: Any, interleaver: Interleaver) -> Compiled:
        """Rewrite `fn` (if not yet) and show its operations in `interleaver`'s run.

        Raises:
            NoSourceError: `fn` is a module, a builtin, or has no Python source.
        """
        compiled, built = instrument(fn, self.probes)
        self._built[_split(fn)[1]] = _unbound(built)
        self.compiled, self._run = compiled, weakref.ref(interleaver)
        return compiled

    def known_in(self, interleaver: Interleaver | None) -> bool:
        """Whether the callee's operations are known in `interleaver`'s run: the call may
        run another function in another run (an implementation chosen by config)."""
        return self._run is not None and interleaver is not None and self._run() is interleaver

    def replace(self, fn: Any) -> Any:
        """The rewritten copy of `fn` to call instead of it (or `fn`, if it has none)."""
        if isinstance(fn, nn.Module):  # a submodule: routed as itself
            return fn
        receiver, key = _split(fn)
        if key not in self._built:
            try:
                self._built[key] = _unbound(instrument(fn, self.probes)[1])
            except NoSourceError:
                self._built[key] = None
        built = self._built[key]
        if built is None:
            return fn
        return built if receiver is None else MethodType(built, receiver)


def _split(fn: Any) -> tuple[Any, Any]:
    """`(receiver, function)`: what `fn` runs, and what it runs it on (None: nothing).

    A bound method runs its function on its object; a callable object (an attention
    processor) its class's `__call__` on itself.
    """
    if isinstance(fn, MethodType):
        return fn.__self__, fn.__func__
    if isinstance(fn, FunctionType) or not callable(fn):
        return None, fn
    call = type(fn).__call__
    return (fn, call) if isinstance(call, FunctionType) else (None, fn)


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
        skipped: Any = _MISSING
        if path in interleaver.wanted_inputs:  # `.input`, `.inputs`, `.skip(value)`
            args, kwargs = interleaver.handle(f"{path}.input.{index}", (args, kwargs))
            skipped = interleaver.skips.pop(path, _MISSING)
        wanted = interleaver.wanted_outputs
        if skipped is _MISSING or type(skipped) is RowSkips:  # the call runs
            if path in wanted:  # `.output`, or `.source` asking for the callee
                fn = interleaver.handle(f"{path}.fn.{index}", fn)
            if callees:
                callee = callees.get(name)
                if callee is not None:
                    fn = callee.replace(fn)
            if skipped is _MISSING:
                output = fn(*args, **kwargs)
            else:  # skipped by some invokes: for their rows
                output = skipped.output(lambda: fn(*args, **kwargs))
        else:
            output = skipped
        if path in wanted:
            output = interleaver.handle(f"{path}.output.{index}", output)
        interleaver.finished[path] = index + 1
        return output

    return op


def _bind_probe(scope: Scope) -> Callable:
    """The `BIND` function of `scope`'s rewritten code: one assignment's value, probed."""
    root, prefix = scope.root, scope.prefix

    def bind(name: str, value: Any, /) -> Any:
        interleaver = root.interleaver
        if interleaver is None:
            return value
        path = prefix + name
        started = interleaver.started
        index = started.get(path, 0)
        started[path] = index + 1
        if path in interleaver.wanted_inputs:  # the value is the one input
            args, kwargs = interleaver.handle(f"{path}.input.{index}", ((value,), {}))
            value = args[0] if args else next(iter(kwargs.values()))
            skipped = interleaver.skips.pop(path, _MISSING)
            if type(skipped) is RowSkips:
                value = skipped.output(lambda: value)
            elif skipped is not _MISSING:
                value = skipped
        if path in interleaver.wanted_outputs:
            value = interleaver.handle(f"{path}.output.{index}", value)
        interleaver.finished[path] = index + 1
        return value

    return bind


def _accelerate_hooked(module: nn.Module, forward: Any) -> bool:
    """Whether `forward` is the wrapper accelerate's `add_hook_to_module` installs (it
    calls `module._hf_hook` around `module._old_forward`)."""
    return (
        isinstance(forward, partial)
        and getattr(module, "_hf_hook", None) is not None
        and getattr(module, "_old_forward", None) is not None
    )


def _with_hook(forward: Callable, method: bool) -> Callable:
    """`forward` (the rewritten `_old_forward`) run inside the module's accelerate hook,
    as accelerate's own wrapper runs the original: `pre_forward`, the forward (without
    grad if the hook asks), `post_forward`. Takes the module first."""

    def hooked(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        hook: Any = module._hf_hook
        args, kwargs = hook.pre_forward(module, *args, **kwargs)
        call = partial(forward, module) if method else forward
        if hook.no_grad:
            with torch.no_grad():
                output = call(*args, **kwargs)
        else:
            output = call(*args, **kwargs)
        return hook.post_forward(module, output)

    return hooked


def instrument(fn: Any, probes: tuple[Callable, Callable]) -> tuple[Compiled, Callable]:
    """`fn` rewritten to call `probes` (for calls, for assignments) at each operation:
    (its listing data, the runnable copy).

    Decorators made with `functools.wraps` are peeled and rebuilt around the copy, so
    they still run; a bound method stays bound to the same object.

    Raises:
        NoSourceError: `fn` is a module, a builtin, or has no Python source.
    """
    if isinstance(fn, nn.Module):
        raise NoSourceError(
            f"it calls a submodule ({type(fn).__name__}): call `.source` on that submodule "
            "directly instead of drilling into the call"
        )
    receiver, fn = _split(fn)
    if not isinstance(fn, FunctionType):
        raise NoSourceError(f"{fn!r} is not a Python function, so it has no source to rewrite")
    inner, chain = peel(fn)
    compiled = _COMPILED.get(inner.__code__)
    if compiled is None:
        compiled = _COMPILED[inner.__code__] = compile_function(inner)
    built = rewrap(chain, build(inner, compiled, probes))
    return compiled, (built if receiver is None else MethodType(built, receiver))


def module_source(module: nn.Module, path: str) -> ModuleSource:
    """The sourced state of `module`, sourcing it now if it is not yet.

    Raises:
        NoSourceError: its forward has no Python source to rewrite.
    """
    source = _SOURCED.get(module)
    if source is None or source.origin is not forward_origin(module):
        _SOURCED.pop(module, None)  # not kept if the new forward has no source
        source = _SOURCED[module] = ModuleSource(module, path)
        if not sourced_modules:
            sourced_modules.append(True)
    return source


def forward_origin(module: nn.Module) -> Any:
    """The function `module`'s calls run now: its class's `forward`, or one set on the
    instance (also while a trace routes it: the forward the routing wrapper calls)."""
    entry = module.__dict__.get("forward")
    if entry is None:
        return type(module).forward
    entry = getattr(entry, "__routed__", entry)
    return getattr(entry, "__func__", entry)


def is_sourced(module: nn.Module) -> bool:
    """Whether `module`'s `.source` has been used (its traced calls run the rewritten forward)."""
    return module in _SOURCED


def source_forward(module: nn.Module, interleaver: Interleaver) -> Callable | None:
    """What the routing wrapper calls instead of `module`'s forward, or None: not sourced.

    Called on routed module calls once any module is sourced (see `sourced_modules`).
    """
    if torch.compiler.is_compiling():
        # Under torch.compile the lookup would be traced, and the registry's guards break
        # when a sourced module is collected meanwhile (IndexError inside dynamo); a
        # compiled region runs its modules' own forwards.
        return None
    source = _SOURCED.get(module)
    if source is None:
        return None
    if source.origin is not forward_origin(module):  # `module.forward = ...` since sourced
        try:
            source = module_source(module, source.path)
        except NoSourceError:  # e.g. a lambda: its calls run it, with no operations
            return None
    return partial(source.run, interleaver, module)
