"""Where a trace body's variables live.

A body runs with `exec(code, namespace)`. Reads fall back to the caller's
variables (its locals, then its globals), also from comprehensions and lambdas
in the body; writes stay in the namespace, so nothing the body assigns reaches
the caller unless it was saved.

An invoke body gets a `Layer` on top of the trace's namespace: a snapshot of
the trace's variables when the invoke was opened (so `for p in prompts: with
tracer.invoke(p)` sees each `p`), falling back to the live trace namespace (so
a later invoke sees what an earlier one assigned), and writing through to it.
A name that no one has assigned yet can be waited for (see `Layer`), so an
invoke may use a value that an earlier invoke will assign later in the pass.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any


class Namespace(dict):
    """A trace's variables, falling back to the caller's scope for reads.

    `helpers` are the engine's functions that rewritten bodies call (see `rewrite`).
    """

    __slots__ = ("caller_locals", "caller_globals", "_helpers")

    def __init__(self, caller_locals: dict, caller_globals: dict, helpers: dict) -> None:
        super().__init__(helpers)
        self.caller_locals = caller_locals
        self.caller_globals = caller_globals
        self._helpers = len(helpers)

    def own_items(self) -> Iterator[tuple[str, Any]]:
        """The (name, value) pairs the body put here: all but the helpers, which come first."""
        return islice(self.items(), self._helpers, None)

    def beside(self, caller_locals: dict, caller_globals: dict) -> Namespace:
        """A namespace with the same helpers for another scope (an invoke that a function
        the body calls opens: `def helper(tracer): with tracer.invoke(...)`)."""
        return Namespace(caller_locals, caller_globals, dict(islice(self.items(), self._helpers)))

    def __missing__(self, name: str) -> Any:
        if name in self.caller_locals:
            return self.caller_locals[name]
        return self.caller_globals[name]


class Layer(dict):
    """An invoke's view of its trace's namespace (see the module docstring).

    Args:
        below: the trace's namespace.
        missing: called with a name found nowhere (not even in builtins); it may
            wait for another invoke to assign it and return the value, or raise
            KeyError (then Python raises NameError).
        assigned: called with each name this layer assigns.
    """

    __slots__ = ("below", "missing", "assigned")

    def __init__(
        self,
        below: Namespace,
        missing: Callable[[str], Any] | None = None,
        assigned: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(below)
        self.below = below
        self.missing = missing
        self.assigned = assigned

    def __missing__(self, name: str) -> Any:
        try:
            return self.below[name]
        except KeyError:
            if self.missing is None or name in builtins.__dict__:
                raise
        return self.missing(name)

    def __setitem__(self, name: str, value: Any) -> None:
        dict.__setitem__(self, name, value)
        self.below[name] = value
        if self.assigned is not None:
            self.assigned(name)
