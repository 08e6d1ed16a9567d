"""Rewriting a function so that every call it makes goes through one probe.

`compile_function(fn)` parses `fn`'s source and turns every call `f(a, k=b)`
into `__nnsight_lab_op__("f_0", f, a, k=b)` and the value of every assignment
`h = v` into `__nnsight_lab_bind__("h_0", v)`, then compiles the result with the
original file name and line numbers (tracebacks still point at the real lines).
`build(fn, compiled, probes)` makes the runnable copy: same globals dict (not a
snapshot), same defaults, same closure cells, plus one cell per probe.

Naming (the contract users copy from listings): the callee's dotted name with
`.` -> `_` (`self.c_attn(...)` -> `self_c_attn`; a subscript is skipped,
`self.h[0](x)` -> `self_h`; a chain that does not start at a name keeps the
attributes after it, `x.view(s).transpose(1, 2)` -> `x_view`, `transpose`;
nothing left -> `call`), then `_<n>`, a counter per name in execution order
(a call's callee and arguments are named before the call itself). An
assignment is named after its target, rooted in a name (`h = ...` -> `h`,
`out[:, 0] = ...` -> `out`, `self.buf = ...` -> `self_buf`), after the calls of
its value; where a call has the same name, the assignments are numbered after the
function's calls of that name, so a call's name does not depend on them
(`f = pick(); f(x)` -> the call `f_0`, the assignment `f_1`: the seed walkthrough's
`attention_interface_0` is the attention call).
`a, b = e1, e2` (a tuple literal) names each element; chained (`a = b = v`),
augmented (`x += v`) and unpacking (`a, b = f()`) assignments are not operations.

The definition is recompiled inside a shell function whose parameters are the
original's free variables (so they stay free variables, bound to the original
cells) and, for a method, inside a class of the same name (so `__private`
names are mangled as before and zero-argument `super()` finds `__class__`).
"""

from __future__ import annotations
import __future__

import ast
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from types import CellType, CodeType, FunctionType

OP = "__nnsight_lab_op__"
BIND = "__nnsight_lab_bind__"
_SHELL = "__nnsight_lab_shell__"
# Calls that read the calling frame: run from inside the probe they would see the wrong one.
_FRAME_CALLS = frozenset({"super", "locals", "vars", "dir", "globals"})
_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag


class NoSourceError(Exception):
    """A callable whose Python source cannot be read or rewritten (message says why)."""


@dataclass(frozen=True)
class Compiled:
    """One function, rewritten.

    Attributes:
        code: the rewritten code object of the function.
        names: operation names, in execution (numbering) order.
        rows: operation name -> row of its call (or assignment) in `lines`.
        lines: the function's source lines, dedented, decorators included.
        def_row: row of the `def` line in `lines` (rows above it are decorators).
        assignments: the names that are assignments (the others are calls).
    """

    code: CodeType
    names: tuple[str, ...]
    rows: dict[str, int]
    lines: tuple[str, ...]
    def_row: int
    assignments: frozenset[str] = frozenset()


class _Instrument(ast.NodeTransformer):
    """Wraps every call in the probe and names it (see the module docstring)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}  # calls per name
        self.rows: dict[str, int] = {}
        self.assignments: set[str] = set()
        self._binds: dict[str, list[tuple[ast.Constant, int]]] = {}  # per name: (probe arg, row)
        self._order: list[tuple[str, int]] = []  # (call name or assignment base, index)

    def _name(self, base: str, node: ast.AST) -> str:
        count = self.counts.get(base, 0)
        self.counts[base] = count + 1
        name = f"{base}_{count}"
        self.rows[name] = node.lineno - 1  # type: ignore[attr-defined]
        self._order.append((name, -1))
        return name

    def _bind_name(self, base: str, node: ast.AST) -> ast.Constant:
        """The (not yet numbered) name argument of an assignment's probe (see `finish`)."""
        constant = ast.Constant(value=base)
        binds = self._binds.setdefault(base, [])
        self._order.append((base, len(binds)))
        binds.append((constant, node.lineno - 1))  # type: ignore[attr-defined]
        return constant

    def finish(self) -> None:
        """Number the assignments: after the calls of the same name, so that a call keeps
        the name it has without them (`attention_interface = pick(); attention_interface(q)`:
        the call is `attention_interface_0`, the assignment `attention_interface_1`)."""
        rows = {}
        for base, index in self._order:
            if index < 0:  # a call: named already
                rows[base] = self.rows[base]
                continue
            constant, row = self._binds[base][index]
            name = constant.value = f"{base}_{self.counts.get(base, 0) + index}"
            rows[name] = row
            self.assignments.add(name)
        self.rows = rows

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)  # first: inner calls run, and are numbered, before this one
        func = node.func
        if isinstance(func, ast.Name) and func.id in _FRAME_CALLS and not node.args:
            return node
        name = self._name("_".join(_dotted(func)) or "call", node)
        probe = ast.Call(
            func=ast.Name(id=OP, ctx=ast.Load()),
            args=[ast.Constant(value=name), func, *node.args],
            keywords=node.keywords,
        )
        return ast.copy_location(probe, node)

    def _bind(self, target: ast.expr, value: ast.expr, statement: ast.stmt) -> ast.expr:
        """`value` routed through the assignment probe under `target`'s name (if it has one)."""
        parts = _dotted(target, rooted=True)
        if not parts:
            return value
        probe = ast.Call(
            func=ast.Name(id=BIND, ctx=ast.Load()),
            args=[self._bind_name("_".join(parts), statement), value],
            keywords=[],
        )
        return ast.copy_location(probe, value)

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        node.value = self.visit(node.value)  # the value runs before the targets
        if len(node.targets) == 1:  # `a = b = v`: one value for two names, not an operation
            target, value = node.targets[0], node.value
            if isinstance(target, (ast.Tuple, ast.List)):
                if _pairs(target, value):  # `a, b = e1, e2`: each name its own value
                    assert isinstance(value, ast.Tuple)
                    value.elts = [
                        self._bind(t, v, node) for t, v in zip(target.elts, value.elts, strict=True)
                    ]
            else:
                node.value = self._bind(target, value, node)
        node.targets = [self.visit(target) for target in node.targets]
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is not None:  # a local's annotation is never evaluated: leave it
            node.value = self._bind(node.target, self.visit(node.value), node)
        node.target = self.visit(node.target)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        # A nested def runs its decorators and defaults first, its body when called.
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.args = self.visit(node.args)
        node.body = [self.visit(statement) for statement in node.body]
        return node

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]


def _dotted(expr: ast.expr, rooted: bool = False) -> list[str]:
    """`self.a.b` -> [self, a, b]; `x[0].y` -> [x, y]; `f(x).y` -> [y] ([] if `rooted`)."""
    parts: list[str] = []
    while True:
        if isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        elif isinstance(expr, ast.Subscript):
            expr = expr.value
        elif isinstance(expr, ast.Name):
            parts.append(expr.id)
            return parts[::-1]
        else:
            return [] if rooted else parts[::-1]


def _pairs(target: ast.Tuple | ast.List, value: ast.expr) -> bool:
    """Whether `target = value` binds each target element its own element of a tuple literal."""
    if not isinstance(value, ast.Tuple) or len(value.elts) != len(target.elts):
        return False
    return not any(isinstance(e, ast.Starred) for e in (*target.elts, *value.elts))


def compile_function(fn: FunctionType) -> Compiled:
    """Rewrite and compile `fn` (decorators are not part of the result).

    Raises:
        NoSourceError: its source cannot be read, or is not a `def`.
    """
    code = fn.__code__
    try:
        source_lines, first = inspect.getsourcelines(code)
    except (OSError, TypeError) as error:
        raise NoSourceError(f"the source of {fn.__qualname__} cannot be read ({error})") from None
    text = textwrap.dedent("".join(source_lines))
    try:
        tree = ast.parse(text)
    except SyntaxError as error:
        raise NoSourceError(f"the source of {fn.__qualname__} does not parse ({error})") from None
    definition = tree.body[0] if tree.body else None
    if not isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise NoSourceError(f"{fn.__qualname__} is not defined by a `def` (a lambda?)")
    instrument = _Instrument()
    definition.body = [instrument.visit(statement) for statement in definition.body]
    instrument.finish()
    def_row = definition.lineno - 1
    definition.decorator_list = []  # the caller keeps the original decorators
    tree.body = [_shell(definition, code, fn.__qualname__)]
    ast.increment_lineno(tree, first - 1)
    ast.fix_missing_locations(tree)
    flags = code.co_flags & _FUTURE_FLAGS
    module = compile(tree, code.co_filename, "exec", flags=flags, dont_inherit=True)
    owner = _owner(fn.__qualname__)
    rewritten = _find_code(module, (_SHELL, *([owner] if owner else []), code.co_name))
    lines = tuple(text.split("\n"))
    assignments = frozenset(instrument.assignments)
    return Compiled(rewritten, tuple(instrument.rows), instrument.rows, lines, def_row, assignments)


def _shell(definition: ast.stmt, code: CodeType, qualname: str) -> ast.FunctionDef:
    """`def shell(<free vars>, OP): [class Owner:] <definition>`: nothing here ever runs."""
    body: list[ast.stmt] = [definition]
    owner = _owner(qualname)
    if owner is not None:
        body = [ast.ClassDef(name=owner, bases=[], keywords=[], body=body, decorator_list=[])]
        if owner not in code.co_freevars:  # the class name, used in the method, stays global
            body.insert(0, ast.Global(names=[owner]))
    # In a class, `__class__` is the compiler's own cell: not a parameter.
    names = [n for n in (*code.co_freevars, OP, BIND) if n != "__class__" or owner is None]
    parameters = [ast.arg(arg=name) for name in names]
    arguments = ast.arguments(
        posonlyargs=[], args=parameters, kwonlyargs=[], kw_defaults=[], defaults=[]
    )
    shell = ast.FunctionDef(name=_SHELL, args=arguments, body=body, decorator_list=[])
    return ast.copy_location(shell, definition)


def _owner(qualname: str) -> str | None:
    """The class a function is defined in, from its qualified name (None: not a method)."""
    parts = qualname.split(".")
    if len(parts) < 2 or parts[-2] == "<locals>":
        return None
    return parts[-2]


def _find_code(code: CodeType, names: tuple[str, ...]) -> CodeType:
    """The code object reached from `code` through nested definitions named `names`."""
    for name in names:
        code = next(c for c in code.co_consts if isinstance(c, CodeType) and c.co_name == name)
    return code


def build(fn: FunctionType, compiled: Compiled, probes: tuple[Callable, Callable]) -> FunctionType:
    """A copy of `fn` running `compiled.code`, with `probes` (for calls, for assignments).

    Keeps `fn`'s globals dict itself, so later changes to the module's globals are seen.
    """
    cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True))
    cells[OP], cells[BIND] = CellType(probes[0]), CellType(probes[1])
    try:
        closure = tuple(cells[name] for name in compiled.code.co_freevars)
    except KeyError as error:
        raise NoSourceError(f"{fn.__qualname__} has no variable {error} to close over") from None
    return _like(fn, compiled.code, closure)


def _like(fn: FunctionType, code: CodeType, closure: tuple | None) -> FunctionType:
    new = FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, closure or None)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    new.__doc__ = fn.__doc__
    new.__dict__.update(fn.__dict__)
    return new


def peel(fn: FunctionType) -> tuple[FunctionType, list[tuple[FunctionType, int]]]:
    """The function under `fn`'s decorators, and the chain of wrappers around it.

    A wrapper (a function defined inside another, not in a class) is peeled when its
    own source calls, by name, exactly one of the Python functions in its closure
    (`functools.wraps` or not): that one is what it decorates.
    The chain is outermost first, each with the index of that cell. A wrapper that
    calls none of them directly (a dispatcher handing the function to a lookup, or to
    a helper) or several is kept as the function to rewrite, so whatever it does still
    happens, and its calls are what `.source` shows.
    """
    chain: list[tuple[FunctionType, int]] = []
    while True:
        index = _decorated_cell(fn)
        if index is None:
            return fn, chain
        inner = _contents((fn.__closure__ or ())[index])
        if not isinstance(inner, FunctionType) or any(inner is w for w, _ in (*chain, (fn, 0))):
            return fn, chain
        chain.append((fn, index))
        fn = inner


_CALLED: dict[CodeType, frozenset[str] | None] = {}  # wrapper code -> free names it calls


def _decorated_cell(wrapper: FunctionType) -> int | None:
    """The index of the closure cell holding the function `wrapper` decorates, if any."""
    cells = wrapper.__closure__
    code = wrapper.__code__
    if not cells or code.co_qualname.split(".")[-2:-1] != ["<locals>"]:
        return None  # a wrapper is defined in its decorator; a method in its class
    if code not in _CALLED:
        _CALLED[code] = _called_free_names(code)
    called = _CALLED[code]
    if called is None:  # no source to read: trust `functools.wraps`
        wrapped = getattr(wrapper, "__wrapped__", None)
        return next((i for i, c in enumerate(cells) if _contents(c) is wrapped), None)
    candidates = [
        i
        for i, (name, cell) in enumerate(zip(code.co_freevars, cells, strict=True))
        if name in called and isinstance(_contents(cell), FunctionType)
    ]
    if len(candidates) > 1:  # ambiguous, unless one of them is what `functools.wraps` names
        wrapped = getattr(wrapper, "__wrapped__", None)
        candidates = [i for i in candidates if _contents(cells[i]) is wrapped]
    return candidates[0] if len(candidates) == 1 else None


def _called_free_names(code: CodeType) -> frozenset[str] | None:
    """The free variables `code`'s own source calls by name (`func(...)`); None: no source."""
    try:
        source_lines, _ = inspect.getsourcelines(code)
        tree = ast.parse(textwrap.dedent("".join(source_lines)))
    except (OSError, TypeError, SyntaxError):
        return None
    free = set(code.co_freevars)
    return frozenset(
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in free
    )


def rewrap(chain: list[tuple[FunctionType, int]], inner: FunctionType) -> FunctionType:
    """`chain`'s wrappers rebuilt around `inner`, with fresh closures.

    The originals belong to the class and are shared by every instance: their cells
    are never written, each wrapper is copied with one cell replaced.
    """
    for wrapper, index in reversed(chain):
        cells = list(wrapper.__closure__ or ())
        cells[index] = CellType(inner)
        copy = _like(wrapper, wrapper.__code__, tuple(cells))
        copy.__wrapped__ = inner  # type: ignore[attr-defined]
        inner = copy
    return inner


def _contents(cell: CellType) -> object:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None
