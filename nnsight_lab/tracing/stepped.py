"""A body compiled as a generator: each module value it reads or writes is a `yield`.

A trace body normally runs in a greenlet of its own, so that it can stop in the
middle of any expression while the model runs up to the value it reads. Starting
a greenlet that runs Python code costs about 10 us (CPython gives it a fresh
frame stack), as much as the rest of a small trace. Many bodies are simple
enough not to need one: when every `.output`, `.input` or `.inputs` is written
in the body itself, the body can be a generator that yields there instead:

    h = model.layer1.output.save()       ->  h = __nnsight_save__((yield (model.layer1, "output")))
    model.layer1.output[:, 0] = 0        ->  (yield (model.layer1, "output"))[:, 0] = 0
    model.layer2.output = h * 2          ->  yield (h * 2, model.layer2, "output")

A read yields `(owner, name)` and gets the value back from `send`; a write
yields `(value, owner, name)` (value first: Python evaluates the right-hand side
first). The body's assigned names are declared `global`, so they land in the
trace's namespace as they do when the body runs with `exec`.

`with tracer.iter[...] as step:` and `for step in tracer.iter[...]:` (or
`tracer.all()`) become a `while` loop that asks the engine to open it, for each
step and to close it (`_YieldRewriter._steps`): a step of a generation may have
to wait for the model.
`with loss.backward():` becomes a request to run backward, the block's `.grad`
reads and writes yields the engine answers from backward's hooks, and a request
that ends the block (`_YieldRewriter._backward`).

A value can also be read inside a function the body calls, where no `yield` can
reach; so a body only compiles this way when it calls nothing but names and
attribute chains (`print`, `torch.argmax`, `x.sum`) that the engine checks before
the trace runs (`Stepped.calls`), reads only plain values from the caller (no
object of the user's, whose methods, properties or operators could read one:
`Stepped.reads`, checked with the calls), and has no nested scope, other `with`,
`try`, or the other constructs listed in `_UNSUPPORTED`. Any other body runs in a
greenlet, with the same result.
So does one that reads `.grad` outside a `with loss.backward():` block, or reads
a module inside one.

`x.source` (already `__nnsight_source__(x)`) becomes
`__nnsight_source__((yield (STEPS, "source", x)))`: the `.source` of an operation
lists the function it calls, which is known only once the model makes that call.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from types import CodeType

from .rewrite import BACKWARD, GRAD, SAVE, SET_GRAD, SOURCE, STEPS

VALUES = ("output", "input", "inputs")

# Statements and expressions that a generator body cannot hold: nested scopes, where a
# read could not yield, and blocks that catch or wrap the body's waits (a `with` only
# where it opens `tracer.iter[...]` or `loss.backward()`).
_UNSUPPORTED = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Lambda,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.AsyncWith,
    ast.AsyncFor,
    ast.Try,
    ast.TryStar,
    ast.Match,
    ast.Global,
    ast.Nonlocal,
    ast.Return,
    ast.Yield,
    ast.YieldFrom,
    ast.Await,
)
# The engine's own calls (`rewrite`): safe, or rewritten into requests (`_YieldRewriter`).
_HELPERS = (SAVE, SOURCE, BACKWARD, GRAD, SET_GRAD)


@dataclass(frozen=True)
class Call:
    """A call in a stepped body, as the engine checks it before the trace runs.

    `root` is a name the body reads but never assigns and `attributes` the chain after
    it (`torch.nn.functional.relu` -> `torch`, `("nn", "functional", "relu")`); a call on
    any other value (`h.sum()`, `x[0].tolist()`) has `root` None and the method's name.
    """

    root: str | None
    attributes: tuple[str, ...]


@dataclass(frozen=True)
class Stepped:
    """A body compiled as a generator function (`code`), the calls it makes, and the
    names whose `.iter[...]` it steps through (each must be a tracer)."""

    code: CodeType
    calls: tuple[Call, ...]
    tracers: tuple[str, ...] = ()
    # The names it reads (the engine checks their values: a user's object may run code
    # that reads a module's value, in a method or a property, where no `yield` can reach).
    reads: tuple[str, ...] = ()


def compile_stepped(statements: list[ast.stmt], filename: str, lineno: int) -> Stepped | None:
    """The body's statements (already rewritten, see `rewrite`) as a generator function,
    or None when the body must run in a greenlet (see the module docstring)."""
    statements = copy.deepcopy(statements)
    assigned = _assigned_names(statements)
    for node in (n for s in statements for n in ast.walk(s)):
        if isinstance(node, _UNSUPPORTED):
            return None
        if isinstance(node, ast.Attribute) and node.attr == "result":
            return None  # `tracer.result` waits for the model in a property: needs a greenlet
    calls, tracers = [], []
    for node in (n for s in statements for n in ast.walk(s)):
        tracer = _tracer_of(node)
        if tracer is not None:
            if not isinstance(tracer, ast.Name):
                return None
            tracers.append(tracer.id)
        if isinstance(node, ast.Call):
            call = _call(node.func, assigned)
            if call is None:
                return None
            if call.root not in _HELPERS:
                calls.append(call)
    rewriter = _YieldRewriter(_next_lines(statements))
    body = rewriter.block(statements)
    if rewriter.unsupported:
        return None
    if assigned:
        body.insert(0, ast.Global(names=sorted(assigned)))
    module = ast.parse("def body():\n    if False:\n        yield")  # a generator even with no read
    function = module.body[0]
    assert isinstance(function, ast.FunctionDef)
    ast.increment_lineno(module, lineno - 1)  # the `def` stands on the `with` line
    function.body = body + function.body
    ast.fix_missing_locations(module)
    try:
        code = compile(module, filename, "exec", dont_inherit=True)
    except SyntaxError:  # a construct valid in a module but not in a function
        return None
    function_code = next(c for c in code.co_consts if isinstance(c, CodeType))
    # Named like the module-level code a body otherwise is, for the frames in tracebacks.
    code = function_code.replace(co_name="<module>", co_qualname="<module>")
    reads = {
        n.id
        for s in statements
        for n in ast.walk(s)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id[:10] != "__nnsight_"
    }
    return Stepped(code, tuple(calls), tuple(tracers), tuple(sorted(reads)))


def _assigned_names(statements: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for node in (n for s in statements for n in ast.walk(s)):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _is_steps(node: ast.AST) -> bool:
    """`tracer.iter[...]` (what `with` and `for` may step through)."""
    return (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "iter"
    )


def _is_all(node: ast.AST) -> bool:
    """`tracer.all()`: `tracer.iter[:]`, when `with` or `for` steps through it (anywhere
    else `x.all()` is most likely a tensor's)."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "all"
        and not node.args
        and not node.keywords
    )


def _tracer_of(node: ast.AST) -> ast.expr | None:
    """The tracer whose steps `node` goes through: `tracer` of a `tracer.iter[...]`, or of
    a `with`/`for` over `tracer.all()`; None for any other node."""
    if _is_steps(node):
        return node.value.value  # type: ignore[attr-defined]
    loop = node.iter if isinstance(node, ast.For) else None
    if isinstance(node, ast.With) and len(node.items) == 1:
        loop = node.items[0].context_expr
    if loop is not None and _is_all(loop):
        return loop.func.value  # type: ignore[attr-defined]
    return None


def _is_helper(node: ast.expr, name: str) -> bool:
    """A call of the helper `name` (what `rewrite` turned `.grad`, `loss.backward()` into)."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def _request(*items: ast.expr) -> ast.Yield:
    """`yield (STEPS, *items)`: a request to the engine (a loop's, a backward block's...)."""
    return ast.Yield(ast.Tuple([ast.Name(STEPS, ast.Load()), *items], ast.Load()))


def _next_lines(statements: list[ast.stmt]) -> dict[int, int | None]:
    """For each statement (by id): the line of the statement after it in its block."""
    lines: dict[int, int | None] = {}
    blocks = [statements] + [
        value
        for node in (n for s in statements for n in ast.walk(s))
        for field in ("body", "orelse", "finalbody")
        if isinstance(value := getattr(node, field, None), list)
    ]
    for block in blocks:
        for index, statement in enumerate(block):
            lines[id(statement)] = block[index + 1].lineno if index + 1 < len(block) else None
    return lines


def _call(func: ast.expr, assigned: set[str]) -> Call | None:
    """What the engine must check of a call's callee; None: a callee it cannot check."""
    attributes: list[str] = []
    while isinstance(func, ast.Attribute):
        attributes.insert(0, func.attr)
        func = func.value
    if isinstance(func, ast.Name) and func.id not in assigned:
        return Call(func.id, tuple(attributes))
    if attributes:
        return Call(None, (attributes[-1],))
    return None


class _YieldRewriter(ast.NodeTransformer):
    """Turns reads and writes of `.output` / `.input` / `.inputs` into yields, and
    `with tracer.iter[...] as step:` / `for step in tracer.iter[...]:` into a loop whose
    steps the engine gives (see `_steps`)."""

    def __init__(self, next_lines: dict[int, int | None]) -> None:
        self.unsupported = False
        self.next_lines = next_lines
        self.loops = 0
        self.in_backward = False  # inside a `with loss.backward():` block

    def block(self, statements: list[ast.stmt]) -> list[ast.stmt]:
        """The statements rewritten (a loop over `tracer.iter` becomes three)."""
        rewritten: list[ast.stmt] = []
        for statement in statements:
            new = self.visit(statement)
            rewritten.extend(new if isinstance(new, list) else [new])
        return rewritten

    def visit_With(self, node: ast.With) -> ast.AST | list[ast.stmt]:
        item = node.items[0]
        target = item.optional_vars
        if len(node.items) != 1 or self.in_backward:
            self.unsupported = True
            return node
        if _is_helper(item.context_expr, BACKWARD) and target is None:
            return self._backward(node, item.context_expr)
        if not (_is_steps(item.context_expr) or _is_all(item.context_expr)):
            self.unsupported = True  # any other context manager may wrap the body's waits
            return node
        if target is not None and not isinstance(target, ast.Name):
            self.unsupported = True
            return node
        return self._steps(node, item.context_expr, target, warns=True)

    def visit_For(self, node: ast.For) -> ast.AST | list[ast.stmt]:
        if not (_is_steps(node.iter) or _is_all(node.iter)):
            self.generic_visit(node)
            return node
        if node.orelse or not isinstance(node.target, ast.Name) or self.in_backward:
            self.unsupported = True
            return node
        return self._steps(node, node.iter, node.target, warns=False)

    def _steps(
        self, node: ast.With | ast.For, steps: ast.expr, target: ast.Name | None, warns: bool
    ) -> list[ast.stmt]:
        """`with/for ... tracer.iter[...]` (or `tracer.all()`) ->

        __nnsight_loop_N__ = yield (STEPS, "open", tracer.iter[...], line, after, warns)
        while (yield (STEPS, "next", __nnsight_loop_N__)):
            step = __nnsight_loop_N__.index
            <body>
        yield (STEPS, "close", __nnsight_loop_N__)

        (`tracer.iter[...]` is evaluated in the body: the engine has checked that `tracer`
        is a tracer, see `Stepped.tracers`.)
        """
        loop = f"__nnsight_loop_{self.loops}__"
        self.loops += 1
        after = self.next_lines.get(id(node))

        opened = _request(
            ast.Constant("open"),
            self.visit(steps),  # the tracer's `Iteration`
            ast.Constant(node.lineno),
            ast.Constant(after),
            ast.Constant(warns),
        )
        body = self.block(node.body)
        if target is not None:
            index = ast.Attribute(ast.Name(loop, ast.Load()), "index", ast.Load())
            body.insert(0, ast.Assign([ast.Name(target.id, ast.Store())], index))
        statements: list[ast.stmt] = [
            ast.Assign([ast.Name(loop, ast.Store())], opened),
            ast.While(_request(ast.Constant("next"), ast.Name(loop, ast.Load())), body, []),
            ast.Expr(_request(ast.Constant("close"), ast.Name(loop, ast.Load()))),
        ]
        for statement in statements:
            ast.copy_location(statement, node)
        return statements

    def _backward(self, node: ast.With, backward: ast.expr) -> list[ast.stmt]:
        """`with loss.backward(...):` (already `__nnsight_backward__(loss, ...)`) ->

        yield (STEPS, "backward", __nnsight_backward__(loss, ...))
        <body, with x.grad -> (yield (STEPS, "grad", x))
              and x.grad = v -> yield (STEPS, "set_grad", x, v)>
        yield (STEPS, "backward_end")

        The engine runs backward when asked, and the body up to the block's end beside it.
        """
        begin = ast.Expr(_request(ast.Constant("backward"), self.visit(backward)))
        self.in_backward = True
        body = self.block(node.body)
        self.in_backward = False
        end = ast.Expr(_request(ast.Constant("backward_end")))
        statements: list[ast.stmt] = [begin, *body, end]
        for statement in statements:
            ast.copy_location(statement, node)
        return statements

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if _is_helper(node, SOURCE):  # the engine may have to wait for what is called
            if self.in_backward:
                self.unsupported = True
            node.args[0] = _request(ast.Constant("source"), node.args[0])
            return node
        for helper, action in ((GRAD, "grad"), (SET_GRAD, "set_grad")):
            if _is_helper(node, helper):
                if not self.in_backward:  # torch's own `.grad`, or its error: the helper's
                    self.unsupported = True
                    return node
                return ast.copy_location(_request(ast.Constant(action), *node.args), node)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if node.attr not in VALUES:
            return node
        if self.in_backward:  # a module read beside backward: the greenlet path's error
            self.unsupported = True
            return node
        if not isinstance(node.ctx, ast.Load):  # `del x.output`, `x.output += 1`, in a tuple
            self.unsupported = True
            return node
        request = ast.Tuple([node.value, ast.Constant(node.attr)], ast.Load())
        return ast.copy_location(ast.Yield(request), node)

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        target = node.targets[0]
        if len(node.targets) == 1 and isinstance(target, ast.Attribute) and target.attr in VALUES:
            if self.in_backward:  # a module write beside backward: as a read, above
                self.unsupported = True
                return node
            value, owner = self.visit(node.value), self.visit(target.value)
            request = ast.Tuple([value, owner, ast.Constant(target.attr)], ast.Load())
            return ast.copy_location(ast.Expr(ast.Yield(request)), node)
        self.generic_visit(node)
        return node
