"""`CapturingContext`: a `with` block whose body is captured and run by the context.

Mental model: entering the block reads and compiles its body (see `source`),
arms the caller's frame to skip it (see `frames`), and on exit hands the body to
`run(body, frame)`. The subclass decides what running means (a trace runs it
alongside a model; an invoke registers it with its trace). Errors raised by the
body come back to the user with the engine's frames removed.

`save(value)` marks a value to outlive the trace that is running now.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from ..config import CONFIG
from ..errors import TraceSourceError, TracingValueError
from .frames import BodySkipper, SkipBody, forget_skip, release_locals, write_names
from .namespace import Namespace
from .saved import MAY_BE_SHARED, holds_saved, saved_names, shared
from .source import Body, body_of_with
from .tracebacks import user_frames

# The running saving contexts of each thread, outermost first: traces that other threads
# run at the same time are theirs (a value saved in one is not kept by another's).
_active: dict[int, list[SavingContext]] = {}
_CONTAINERS = (list, tuple, dict)  # what `holds_saved` looks into
get_ident = threading.get_ident


class CapturingContext:
    """Base of every context manager that runs its own body (trace, invoke)."""

    body: Body | None = None
    _skipper: BodySkipper | None = None
    _frame: FrameType | None = None
    _entered: Any = None

    # Called (no arguments) where the body would start, inside the `with` statement's later
    # context managers (`with model.trace(x), torch.no_grad():`); its answer is `at_body`.
    probe: Callable[[], Any] | None = None
    at_body: Any = None

    def __enter__(self) -> Any:
        frame = sys._getframe(1)
        self.body = body = body_of_with(frame)
        self._frame = frame
        self._entered = entered = self.entered()
        if body.first_line is not None:
            skipper = BodySkipper(frame, body.first_line, body.skip_at, self.probe)
            self._skipper = skipper
            if skipper.unbound is not None and skipper.unbound != body.target:
                skipper.disarm()
                self._skipper = None
                raise TraceSourceError(
                    f"{body.filename}:{body.lineno}: a traced body that starts with `try:` "
                    f"cannot follow `as {skipper.unbound}` of another context manager in the "
                    "same `with`; open that one in its own `with` inside the body, or put a "
                    "statement before the `try:`."
                )
        return entered

    def entered(self) -> Any:
        """What `with ... as name` binds (the context itself unless overridden)."""
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        __tracebackhide__ = True  # noqa: F841  (IPython and pytest hide this frame)
        skipper, frame, self._skipper, self._frame = self._skipper, self._frame, None, None
        entered, self._entered = self._entered, None
        if skipper is not None:
            skipper.disarm()
            self.at_body = skipper.probed
        if exc_type is not SkipBody and not (exc_type is None and skipper is None):
            return False  # the body never started: let Python report the error
        assert frame is not None and self.body is not None
        if exc_type is SkipBody:
            forget_skip()
            if skipper is not None and skipper.unbound is not None:  # skipped before `as x`
                write_names(frame, {skipper.unbound: entered})
        try:
            self.run(self.body, frame)
        except BaseException as error:
            if not CONFIG.APP.DEBUG:
                error.__traceback__ = user_frames(error.__traceback__)
            raise  # bare: with the chain the user's code gave it (not `from`, see `reraise`)
        return True

    def run(self, body: Body, frame: FrameType) -> None:
        """Run the captured body; `frame` is the frame that holds the `with` statement."""
        raise NotImplementedError


class SavingContext(CapturingContext):
    """A capturing context that owns a set of saved values (a trace)."""

    def __init__(self) -> None:
        self.saved_ids: set[int] = set()

    def saved_in(self, namespace: dict) -> dict[str, Any]:
        """The variables of `namespace` that hold a value the body saved.

        Saved values are known by identity, but CPython gives one object to equal small
        ints, `True`, `None`, short strings and constants: such a value is the caller's
        only under a name that the body's source saves (`n = nnsight.save(5)`,
        `nnsight.save(n)`), so `flag = True` beside `keep = nnsight.save(True)` stays
        in the body. A list, tuple or dict made of saved values (and plain constants)
        is kept too: `outputs.append(model.layer.output.save())` fills a list that the
        caller reads after the block."""
        ids = self.saved_ids
        picked, sharing = {}, []
        items = namespace.own_items() if isinstance(namespace, Namespace) else namespace.items()
        for k, v in items:
            if k.startswith("__"):  # `__builtins__`, which `exec` puts there
                continue
            if id(v) in ids or (isinstance(v, _CONTAINERS) and holds_saved(v, ids) is True):
                picked[k] = v
                if type(v) in MAY_BE_SHARED and shared(v):
                    sharing.append(k)
        if sharing and self.body is not None:
            names = saved_names(self.body.source)
            if names is not None:
                for name in sharing:
                    if name not in names:
                        del picked[name]
        return picked

    def save(self, value: Any) -> Any:
        """Mark `value` to be kept after the trace (and after enclosing traces); returns it."""
        return save(value)

    def run(self, body: Body, frame: FrameType) -> None:
        try:
            write_names(frame, self.execute(body, frame.f_locals, frame.f_globals))
        finally:
            release_locals(frame)

    def execute(self, body: Body, caller_locals: dict, caller_globals: dict) -> dict[str, Any]:
        """Run `body` reading the caller's variables from the two dicts; returns the values
        it saved, by name (which `run` makes the caller's variables)."""
        raise NotImplementedError

    _running: list[SavingContext] | None = None  # its thread's contexts, while it runs

    def activate(self) -> None:
        thread = get_ident()
        running = _active.get(thread)
        if running is None:
            running = _active[thread] = []
        running.append(self)
        self._running = running

    def deactivate(self) -> None:
        running, self._running = self._running, None
        if running is None:
            return
        if running and running[-1] is self:
            running.pop()
        elif self in running:
            running.remove(self)
        if not running:
            _active.pop(get_ident(), None)

    def outer(self) -> SavingContext | None:
        """The running context this one runs in (a session around a trace), if any."""
        running = self._running
        if running is None or len(running) < 2 or running[-1] is not self:
            return None
        return running[-2]


def save(value: Any) -> Any:
    """Keep `value` after the trace that is running (nnsight's `nnsight.save`).

    Args:
        value: any object: a tensor, a list, a number.

    Returns:
        The same object, so that `x = nnsight_lab.save(model.layer1.output)` reads well.

    Raises:
        TracingValueError: no trace is running (a `ValueError`, as nnsight's).

    Example:
        >>> with model.trace(x):
        ...     out = nnsight_lab.save(model.output)
    """
    contexts = _active.get(get_ident())
    if not contexts:
        # A thread with no trace of its own may run part of a body for another thread's
        # trace: autograd runs a GPU backward, and so a `with loss.backward():` block, in
        # a device thread. The value is kept by the traces running now.
        contexts = [c for running in list(_active.values()) for c in running]
    if not contexts:
        raise TracingValueError(
            "nnsight_lab.save() was called outside a trace; call it inside "
            "`with model.trace(...):` on a value you want to keep after the block."
        )
    for context in contexts:  # saved in a nested trace: it leaves the outer ones too
        context.saved_ids.add(id(value))
    return value
