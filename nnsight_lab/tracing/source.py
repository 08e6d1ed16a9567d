"""Find the body of the `with` block that is being entered, and compile it.

The body of `with model.trace(...):` is not run by Python where it stands: the
tracer reads the block's source from the caller's file (a script, an IPython
cell, `python -c`), compiles the statements with the caller's file name and
line numbers (so tracebacks, `breakpoint()` and `print` behave as in the user's
code) and runs that code object itself, alongside the model.

The few rewrites that give a body its meaning (`x.save()`, `.grad`, `with
loss.backward():`) are in `rewrite`.

A compiled body is cached per (code object, line) of the `with` statement.
"""

from __future__ import annotations

import ast
import functools
import linecache
import sys
import threading
import traceback
from dataclasses import dataclass, replace
from types import CodeType, FrameType

from ..errors import TraceSourceError
from .frames import raise_point
from .rewrite import BodyRewriter
from .stepped import Stepped, compile_stepped


@dataclass(frozen=True)
class Body:
    """The compiled body of one `with` statement.

    Attributes:
        code: the body compiled as module-level code, run with `exec`.
        source: the body's own source text (dedented), what travels to a server.
        start: the line of `source`'s first line in `filename`.
        filename: the file the body stands in.
        lineno: the line of the `with` statement.
        has_invokes: whether the body opens `with <tracer>.invoke(...)` blocks (also in
            a function it passes the tracer to, see `body_of_with`).
        first_line: line of the first statement that does something (None: only `pass`).
        target: the name after `as` in the `with` statement, if one.
        after: line of the statement that follows the `with` block in its block, if one.
        endless: whether the body opens an unbounded `tracer.iter[:]` / `tracer.all()`.
        reads: names the body reads before assigning them (free names).
        stepped: the body as a generator, when it can run without a greenlet (see `stepped`).
        opens_block: whether its first statement that does something is a compound one.
        skip_at: where the caller's frame skips the body (`frames.raise_point`).
    """

    code: CodeType
    source: str
    filename: str
    lineno: int
    has_invokes: bool
    first_line: int | None
    reads: tuple[str, ...]
    target: str | None = None
    after: int | None = None
    endless: bool = False
    stepped: Stepped | None = None
    start: int = 1
    opens_block: bool = False
    skip_at: tuple[int | None, str | None] = (None, None)
    given_target: tuple[str, ...] = ()  # functions called with `target`: `helper(tracer)`


_cache: dict[tuple[CodeType, int], Body] = {}
# One compile at a time: CPython 3.11's ast module can fail ("AST constructor recursion
# depth mismatch") when threads build trees at once, as 16 client threads tracing do.
_compiling = threading.RLock()


def body_of_with(frame: FrameType) -> Body:
    """The compiled body of the `with` statement that `frame` is entering.

    Raises:
        TraceSourceError: the source cannot be found, or the body cannot be compiled.
    """
    key = (frame.f_code, frame.f_lineno)
    body = _cache.get(key)
    if body is None:
        with _compiling:
            body = _cache.get(key)
            if body is None:
                body = _compile_body(frame.f_code.co_filename, frame.f_lineno, frame.f_globals)
                if body.first_line is not None and body.opens_block:  # `try:` may need it
                    skip_at = raise_point(frame.f_code, frame.f_lasti, body.first_line)
                    body = replace(body, skip_at=skip_at)
                if not body.has_invokes and any(
                    _opens_invokes(_lookup(frame, name)) for name in body.given_target
                ):  # `helper(tracer)` opens the invokes: the body runs first to collect them
                    body = replace(body, has_invokes=True, stepped=None)
            if len(_cache) > 4096:
                _cache.clear()
            _cache[key] = body
    return body


def source_lines(filename: str, module_globals: dict | None = None) -> list[str]:
    """The lines of `filename`, also for `python -c` (read from the command line)."""
    lines = linecache.getlines(filename, module_globals)
    if not lines and filename == "<string>":
        command = _command_line_source()
        if command is not None:
            lines = command.splitlines(keepends=True)
            # Registered so that tracebacks of `python -c` show the user's lines too; the
            # default excepthook reads files from disk, the traceback module reads linecache.
            linecache.cache[filename] = (len(command), None, lines, filename)
            if sys.excepthook is sys.__excepthook__:
                sys.excepthook = traceback.print_exception
    return lines


def _command_line_source() -> str | None:
    """The code of `python -c CODE`, which Python keeps nowhere but the command line."""
    if not sys.argv or sys.argv[0] != "-c":
        return None
    try:
        with open("/proc/self/cmdline", "rb") as file:
            parts = file.read().split(b"\0")
    except OSError:
        return None
    for index, part in enumerate(parts[1:-1], start=1):
        if part == b"-c":
            return parts[index + 1].decode()
    return None


def _compile_body(filename: str, lineno: int, module_globals: dict) -> Body:
    lines = source_lines(filename, module_globals)
    if not lines:
        raise TraceSourceError(
            f"cannot read the source of the `with` block at {filename}:{lineno}. A trace body "
            "must live in a file, a notebook cell or `python -c`; code typed at the plain "
            "Python prompt or passed to exec() as a string has no source to read. Put the code "
            "in a file or a cell."
        )
    text = "".join(lines)
    try:
        tree = ast.parse(text, filename)
    except SyntaxError as error:
        raise TraceSourceError(f"cannot parse {filename}: {error}") from None
    node, after = _find_with(tree, lineno)
    if node is None:
        raise TraceSourceError(
            f"no `with` statement found at {filename}:{lineno}; the source on disk may have "
            "changed since the code was loaded. Re-run the cell or restart the script."
        )
    first = node.body[0]
    if first.lineno == lineno:
        raise TraceSourceError(
            f"{filename}:{lineno}: the body of a traced `with` block must start on its own line "
            "(write `with model.trace(x):` then the body indented on the next lines)."
        )
    target = node.items[0].optional_vars
    name = target.id if isinstance(target, ast.Name) else None
    return compile_statements(node.body, filename, lineno, lines, target=name, after=after)


@functools.lru_cache(maxsize=256)
def statement_after(filename: str, lineno: int) -> int | None:
    """The line of the statement after the compound statement whose header is at `lineno`."""
    tree = ast.parse("".join(source_lines(filename)), filename)
    for block in _blocks(tree):
        for index, statement in enumerate(block):
            if statement.lineno == lineno and index + 1 < len(block):
                return block[index + 1].lineno
    return None


def compile_statements(
    statements: list[ast.stmt],
    filename: str,
    lineno: int,
    lines: list[str],
    *,
    target: str | None = None,
    after: int | None = None,
) -> Body:
    """Compile the statements of a body, keeping their file name and line numbers.

    Raises:
        TraceSourceError: a statement cannot run as a trace body (e.g. `return`).
    """
    first, last = statements[0], statements[-1]
    segment = lines[first.lineno - 1 : (last.end_lineno or last.lineno)]
    rewriter = BodyRewriter()
    module = ast.Module(body=[rewriter.visit(s) for s in statements], type_ignores=[])
    ast.fix_missing_locations(module)
    try:
        code = compile(module, filename, "exec", dont_inherit=True)
    except SyntaxError as error:
        raise TraceSourceError(
            f"{filename}:{error.lineno}: {error.msg} in a trace body. The body runs as its own "
            "block, so `return`, `yield`, `break` or `continue` cannot leave it: save the value, "
            "and return or break after the `with` block."
        ) from None
    doing = next((s for s in statements if not _is_trivial(s)), None)  # the first that runs
    has_invokes = any(_is_invoke(n) for s in statements for n in ast.walk(s))
    endless = any(_is_endless(n) for s in statements for n in ast.walk(s))
    simple = not has_invokes
    given = tuple(_given(statements, target)) if target is not None and not has_invokes else ()
    return Body(
        code=code,
        source=_dedent(segment),
        filename=filename,
        lineno=lineno,
        has_invokes=has_invokes,
        first_line=doing.lineno if doing is not None else None,
        opens_block=isinstance(doing, _BLOCKS),
        reads=_free_names(statements),
        target=target,
        after=after,
        endless=endless,
        stepped=compile_stepped(module.body, filename, lineno) if simple else None,
        start=first.lineno,
        given_target=given,
    )


def _find_with(tree: ast.Module, lineno: int) -> tuple[ast.With | None, int | None]:
    """The innermost `with` whose header spans `lineno`, and the line of the next statement."""
    found, after = None, None
    for block in _blocks(tree):
        for index, node in enumerate(block):
            if not isinstance(node, ast.With) or not node.lineno <= lineno <= node.body[0].lineno:
                continue
            if node.lineno == node.body[0].lineno and found is not None:
                continue  # a one-line `with` only counts when nothing else matches
            if found is None or node.lineno >= found.lineno:
                found = node
                after = block[index + 1].lineno if index + 1 < len(block) else None
    return found, after


def _blocks(tree: ast.Module) -> list[list[ast.stmt]]:
    """Every list of statements in the tree (module body, bodies of compound statements)."""
    blocks: list[list[ast.stmt]] = [tree.body]
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            value = getattr(node, field, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                if node is not tree:
                    blocks.append(value)
        for handler in getattr(node, "handlers", []):
            blocks.append(handler.body)
    return blocks


# Statements that open a block: their first instruction may lie outside every exception
# handler (a `try:` line's NOP), where the body cannot be skipped on a line event.
_BLOCKS = (ast.Try, ast.TryStar, ast.If, ast.While, ast.For, ast.With, ast.Match)


def _is_trivial(statement: ast.stmt) -> bool:
    """`pass`, `...` or a docstring: compiles to nothing that runs."""
    return isinstance(statement, ast.Pass) or (
        isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
    )


def _is_endless(node: ast.AST) -> bool:
    """`x.iter[a:]` (no upper bound) or `x.all()`."""
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
        return (
            node.value.attr == "iter" and isinstance(node.slice, ast.Slice) and not node.slice.upper
        )
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "all"
        and not node.args
    )


def _is_invoke(node: ast.AST) -> bool:
    return isinstance(node, ast.With) and any(
        isinstance(item.context_expr, ast.Call)
        and isinstance(item.context_expr.func, ast.Attribute)
        and item.context_expr.func.attr == "invoke"
        for item in node.items
    )


def _given(statements: list[ast.stmt], target: str) -> dict[str, None]:
    """The functions (`name` or `name.attr`) that the statements call with `target` as an
    argument (`helper(tracer, ...)`, `helper(tracer=tracer)`)."""
    found: dict[str, None] = {}
    for statement in statements:
        for node in ast.walk(statement):
            if not isinstance(node, ast.Call):
                continue
            arguments = [*node.args, *(k.value for k in node.keywords)]
            if not any(isinstance(a, ast.Name) and a.id == target for a in arguments):
                continue
            func = node.func
            if isinstance(func, ast.Name):
                found.setdefault(func.id)
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                found.setdefault(f"{func.value.id}.{func.attr}")
    return found


def _lookup(frame: FrameType, dotted: str) -> object:
    """What `dotted` (`name` or `name.attr`) names in `frame`, or None."""
    name, _, attr = dotted.partition(".")
    scope = frame.f_locals
    value = scope[name] if name in scope else frame.f_globals.get(name)
    try:
        return getattr(value, attr, None) if attr and value is not None else value
    except Exception:  # a property that fails: not a helper we can look into
        return None


def _opens_invokes(function: object) -> bool:
    """Whether `function`'s code (or a block nested in it) calls an `.invoke` attribute."""
    function = getattr(function, "__func__", function)  # a bound method
    function = getattr(function, "func", function)  # functools.partial
    code = getattr(function, "__code__", None)
    todo = [code] if isinstance(code, CodeType) else []
    while todo:
        code = todo.pop()
        if "invoke" in code.co_names:
            return True
        todo.extend(c for c in code.co_consts if isinstance(c, CodeType))
    return False


def _free_names(statements: list[ast.stmt]) -> tuple[str, ...]:
    """Names read by the statements that they do not assign first (in source order)."""
    assigned: set[str] = set()
    reads: dict[str, None] = {}
    for statement in statements:
        for node in ast.walk(statement):
            if isinstance(node, ast.Name):
                if isinstance(node.ctx, ast.Load) and node.id not in assigned:
                    reads.setdefault(node.id)
                elif isinstance(node.ctx, ast.Store):
                    assigned.add(node.id)
    return tuple(reads)


def _dedent(segment: list[str]) -> str:
    indents = [len(s) - len(s.lstrip()) for s in segment if s.strip()]
    cut = min(indents, default=0)
    return "".join(s[cut:] if s.strip() else "\n" for s in segment)
