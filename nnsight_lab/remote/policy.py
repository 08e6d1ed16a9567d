"""The body policy: what a model server runs of a trace body sent by a stranger.

A body may use the trace's values (`.output`, `.input`, `.inputs`, `.grad`, `.source`
operations), the tracing API, tensors, `torch` and `math` functions, and its own variables,
functions and comprehensions. `check` reads its source before any of it runs and refuses the
first line that reaches past that: imports; names starting with `_` (RestrictedPython's errors,
on the user's lines); builtins, attributes and calls that reach outside or change the server
(`open`, `getattr`, `torch.load`, `torch.save(x, f)`, `.numpy()`, `torch.os`, `str.format`,
`torch.set_*`, classes); and writes to the model. A write (`a.b[i] = v`, `a.b.mul_(2)`, a `*_`
function's arguments, `out=`) is followed in through indexing, views and method calls: the
first attribute met must be `.output`, `.input`, `.inputs` or `.grad`, or there is none (a
local). `a.b = v` is allowed for those four only; module methods (`.eval()`, `.to()` of a
module, `.register_*`, `.parameters()`) are refused.

Limits: the check sees names, not types. A weight reached through a local alias
(`w = llm.lm_head.weight; w.zero_()`) passes, so the server also checks after a run that no
weight changed; a model is known by a name the body uses with a tracing attribute and never
assigns; the refused attributes are torch's, numpy's and transformers' known ones.
`while True:` passes (the server's timeout ends it). `trusted=True` (a personal server, which
accepts cloudpickle anyway) skips the check.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from RestrictedPython import compile_restricted_exec

from ..errors import PolicyError

IMPORTS = "no imports"
PRIVATE = "no private or dunder names"
STATE = "no writes to parameters or model state"
SETTINGS = "no changes to server settings"
OUTSIDE = "no I/O or code loading"
FORMAT = "no `str.format`"
CLASSES = "no classes"
TYPE = "no builtin `type`"
UNSUPPORTED = "no unsupported statements"
RESERVED = "no reserved names"
SYNTAX = "syntax"

_ADVICE = {
    IMPORTS: "A trace body may use the model, tensors, torch and math functions; compute what "
    "needs other modules locally, before or after the trace.",
    PRIVATE: "Names starting with `_` are private or internals; use the public API (`.output`).",
    STATE: "A body may change the values in the model (`.output`, `.input`, `.inputs`, `.grad`) "
    "and its own variables, not the model's weights or modules, nor take them (`.data`, "
    "`.parameters()`); to change weights, use a model of your own.",
    SETTINGS: "The server's devices and torch settings serve every request; leave them be.",
    OUTSIDE: "A server reads no files and loads no code for a body; do that locally.",
    FORMAT: "`str.format` reads attributes by name (`'{0.__class__}'`); use an f-string.",
    CLASSES: "The server may call a class's methods outside the body; use functions instead.",
    TYPE: "`type(x)` of a value of the body is fine; of the model, or with more arguments, not.",
    UNSUPPORTED: "Write it with plain statements (`if` for `match`, `x = ...` for `x: T = ...`).",
    RESERVED: "Rename the variable.",
}
_BUILTIN_ADVICE = "It reaches outside the body (files, code, the interpreter); do that locally."

_BUILTINS = frozenset(
    "open eval exec compile getattr setattr delattr hasattr globals locals vars dir breakpoint "
    "input help exit quit memoryview super object classmethod staticmethod property license "
    "credits copyright __builtins__".split()
)
_REFUSED_NAMES = {  # attributes refused wherever they stand, by rule
    OUTSIDE: "os sys subprocess builtins importlib inspect ctypes io pathlib shutil socket pickle "
    "marshal gc threading multiprocessing signal platform tempfile glob types weakref traceback "
    "site runpy pdb code urllib http requests dill cloudpickle load hub jit utils serialization "
    "package library onnx profiler distributed from_file load_library fx compile compiler export "
    "overrides testing classes fromfile tofile loadtxt savetxt genfromtxt memmap ctypeslib savez "
    "savez_compressed save_pretrained push_to_hub from_pretrained from_config to_json_file "
    "save_vocabulary backend_tokenizer LanguageModel login whoami remote jupyter",
    STATE: "data numpy storage untyped_storage set_ share_memory share_memory_ data_ptr apply "
    "load_state_dict state_dict parameters named_parameters buffers named_buffers named_modules "
    "children named_children get_submodule get_parameter get_buffer train eval zero_grad "
    "add_module to_empty edit clear_edits dispatch grad_fn resize_token_embeddings tie_weights "
    "init_weights post_init add_tokens add_special_tokens prune_heads "
    "gradient_checkpointing_enable gradient_checkpointing_disable",
    SETTINGS: "backends use_deterministic_algorithms CONFIG",
    FORMAT: "format format_map",
}
_REFUSED = {name: rule for rule, names in _REFUSED_NAMES.items() for name in names.split()}
_DEVICE_MODULES = frozenset({"cuda", "mps", "xpu"})  # `torch.cuda.<x>`; `x.cuda()` is a method

_VALUES = frozenset({"output", "input", "inputs", "grad"})  # a trace's values: writable
_VIEWS = frozenset({"T", "mT", "H", "mH", "real", "imag"})  # views of the tensor before them
_PARAMS = frozenset({"weight", "bias"})  # `w.float()` on these copies; on a module it converts
_CONVERSIONS = frozenset({"to", "cuda", "cpu", "half", "float", "double", "bfloat16", "type"})
_MUTATORS = frozenset(
    "append extend insert pop popitem clear remove setdefault update add discard sort "
    "reverse".split()
)
_NAMESPACES = frozenset({"torch", "math"})  # `torch.nn.init.zeros_(x)`: the receiver is no state
_MODEL_MARKS = _VALUES - {"grad"} | {"source", "skip", "trace", "generate", "scan", "session"}

_RP_LINE = re.compile(r"Line (\d+): (.*)", re.DOTALL)
_RP_RULES = {'with "_"': PRIVATE, "__roles__": PRIVATE, "restricted": PRIVATE, "reserved": RESERVED}
# RestrictedPython refuses `a.b += c` and `a[i] += c` only because it has no run-time guard
# for them; we run none of its guards, and our state-write rule judges those targets.
_RP_IGNORED = ("Augmented assignment of",)


@dataclass(frozen=True)
class _Violation:
    line: int  # within the body's source, from 1
    col: int
    rank: int  # on one line: 0 imports, builtins; 1 RestrictedPython's; 2 ours; 3 `a.b =`
    code: str
    rule: str
    advice: str


def check(source: str, filename: str, line: int, *, trusted: bool = False) -> None:
    """Refuse a trace body that a model server does not run for strangers.

    Args:
        source: the body's dedented source.
        filename: the user's file (or notebook cell) the body stands in.
        line: the line of `source`'s first line in that file.
        trusted: the server's operator trusts its users (it accepts cloudpickle anyway):
            nothing is checked.

    Raises:
        PolicyError: for the first line that breaks a rule (see the module docstring); its
            `lineno` is the line in `filename`, its message quotes the code, names the rule
            and says what to do instead.

    Example:
        >>> check("hs = llm.transformer.h[5].output.save()", "script.py", 12)
        >>> check("import os", "script.py", 12)
        Traceback (most recent call last):
        PolicyError: script.py:12: `import os` is not allowed on a model server (rule: ...
    """
    if trusted:
        return
    tree = _parse(source, filename, line)
    visitor = _Visitor(source, _model_roots(tree))
    try:
        visitor.visit(tree)
        found = visitor.found + _restricted(source, filename)
    except RecursionError:
        found = [_syntax(1, source, "It is nested too deeply to check; split it up.")]
    if found:
        raise _error(filename, line, min(found, key=lambda v: (v.line, v.rank, v.col)))


def _parse(source: str, filename: str, line: int) -> ast.Module:
    """The body's syntax tree, once it compiles (`compile` also finds `yield` outside a def)."""
    try:
        tree = ast.parse(source, filename)
        compile(tree, filename, "exec", dont_inherit=True)
    except SyntaxError as err:
        found = _syntax(err.lineno or 1, source, f"It does not compile: {err.msg}.")
        raise _error(filename, line, found) from err
    except (ValueError, RecursionError, MemoryError) as err:  # too deep a nesting, ...
        raise _error(filename, line, _syntax(1, source, f"It cannot be read: {err}.")) from err
    return tree


def _line(source: str, lineno: int) -> str:
    lines = source.splitlines()
    return lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""


def _syntax(lineno: int, source: str, advice: str) -> _Violation:
    return _Violation(lineno, 0, 0, _line(source, lineno), SYNTAX, advice)


def _error(filename: str, line: int, v: _Violation) -> PolicyError:
    lineno = line + v.line - 1
    code = v.code.strip().splitlines()[0] if v.code.strip() else ""
    code = code if len(code) <= 80 else code[:77] + "..."
    message = f"{filename}:{lineno}: `{code}` is not allowed on a model server (rule: {v.rule}). "
    return PolicyError(message + v.advice, filename=filename, lineno=lineno, rule=v.rule)


def _restricted(source: str, filename: str) -> list[_Violation]:
    """RestrictedPython's errors, as violations (its lines count from the source's first)."""
    found = []
    for error in compile_restricted_exec(source, filename).errors:
        match = _RP_LINE.match(error)
        lineno, text = (int(match[1]), match[2]) if match else (1, error)
        if text.startswith(_RP_IGNORED):
            continue
        rule = next((r for key, r in _RP_RULES.items() if key in text), UNSUPPORTED)
        advice = f"RestrictedPython says: {text} {_ADVICE[rule]}"
        found.append(_Violation(lineno, 0, 1, _line(source, lineno), rule, advice))
    return found


def _root(node: ast.expr) -> str | None:
    """The name an attribute, index and call chain starts from (`llm` in `llm.a[0].b()`)."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _inner(node: ast.expr, calls: bool = True) -> ast.expr:
    """What `node` reaches into, walking in through indexing, views and (if `calls`) methods.

    `llm.lm_head.weight.view(-1)[0]` -> the attribute `.weight`; `llm.h[0].output[:, -1]` ->
    `.output`; `hs[0]` -> the name `hs`; `x + 1` -> itself.
    """
    while True:
        if isinstance(node, ast.Subscript):
            node = node.value
        elif calls and isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            node = node.func.value
        elif isinstance(node, ast.Attribute) and node.attr in _VIEWS:
            node = node.value
        else:
            return node


def _model_roots(tree: ast.AST) -> set[str]:
    """Names the body uses as a model (`llm` in `llm.h[0].output`) and does not assign."""
    nodes = list(ast.walk(tree))
    marked = {
        _root(n.value) for n in nodes if isinstance(n, ast.Attribute) and n.attr in _MODEL_MARKS
    }
    bound = {n.id for n in nodes if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    bound |= {n.arg for n in nodes if isinstance(n, ast.arg)}
    return {root for root in marked if root is not None and root not in bound}


def _is_text(node: ast.expr) -> bool:
    return isinstance(node, ast.JoinedStr) or isinstance(getattr(node, "value", None), str)


def _attribute_rule(node: ast.Attribute) -> str | None:
    """The rule that refuses the attribute `node` wherever it stands, if one does."""
    name = node.attr
    if name in _REFUSED:
        return _REFUSED[name]
    if name.startswith("register_"):
        return STATE
    if name.startswith("set_") and name != "set_grad_enabled":
        return SETTINGS
    if isinstance(node.value, ast.Attribute) and node.value.attr in _DEVICE_MODULES:
        return SETTINGS
    return None


class _Visitor(ast.NodeVisitor):
    """Our rules (RestrictedPython's come from `_restricted`), gathered in source order."""

    def __init__(self, source: str, roots: set[str]) -> None:
        self.source, self.roots = source, roots
        self.found: list[_Violation] = []
        self.one_arg_types: set[int] = set()  # ids of `type` names called as `type(x)`

    def refuse(self, node: ast.AST, rule: str, rank: int = 2) -> None:
        code = ast.get_source_segment(self.source, node) or ""
        line, col = getattr(node, "lineno", 1), getattr(node, "col_offset", 0)
        advice = _ADVICE.get(rule, _BUILTIN_ADVICE)
        self.found.append(_Violation(line, col, rank, code, rule, advice))

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        self.refuse(node, IMPORTS, rank=0)

    visit_ImportFrom = visit_Import

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.refuse(node, CLASSES)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in _BUILTINS:
            self.refuse(node, f"no builtin `{node.id}`", rank=0)
        elif node.id == "type" and id(node) not in self.one_arg_types:
            self.refuse(node, TYPE, rank=0)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)) and node.attr not in _VALUES:
            self.refuse(node, STATE, rank=3)
        rule = _attribute_rule(node)
        if rule is not None:
            self.refuse(node, rule)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)) and self.is_state(node.value):
            self.refuse(node, STATE)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id == "__import__":
            self.refuse(node, IMPORTS, rank=0)
        if isinstance(func, ast.Name) and func.id == "type":
            self.one_arg_types.add(id(func))  # refused here, with the call quoted, if not
            if len(node.args) != 1 or node.keywords or self.is_state(node.args[0]):
                self.refuse(node, TYPE, rank=0)  # `type(llm)("gpt2")` would load a model
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "save"
            and (len(node.args) > 1 or node.keywords or any(_is_text(a) for a in node.args))
        ):  # torch.save(obj, f), numpy.save(f, a), tokenizers' save(path); not nnsight.save(x)
            self.refuse(node, OUTSIDE)
        if any(k.arg == "trust_remote_code" for k in node.keywords):
            self.refuse(node, OUTSIDE)
        self.check_writes(node)
        self.generic_visit(node)

    def check_writes(self, node: ast.Call) -> None:
        """In-place methods, `*_` functions, `out=`, module conversions and mutations."""
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        receiver = func.value if isinstance(func, ast.Attribute) else None
        in_place = name.endswith("_") and not name.startswith("_")
        written = [k.value for k in node.keywords if k.arg == "out"]
        if in_place:
            written += node.args
        if receiver is not None and (in_place or name in _MUTATORS):
            if _root(receiver) not in _NAMESPACES:
                written.append(receiver)
        converts = name in _CONVERSIONS and receiver is not None and self.is_module(receiver)
        if converts or any(self.is_state(value) for value in written):
            self.refuse(node, STATE)

    def is_state(self, node: ast.expr) -> bool:
        """Whether `node` may be the model's own state (a module, a weight, a buffer)."""
        inner = _inner(node)
        if isinstance(inner, ast.Attribute):
            return inner.attr not in _VALUES
        return isinstance(inner, ast.Name) and inner.id in self.roots

    def is_module(self, node: ast.expr) -> bool:
        """Whether `node` may be a module (`.to()` on it converts the model in place)."""
        inner = _inner(node, calls=False)  # `llm.lm_head(x).float()` converts an output
        if isinstance(inner, ast.Attribute):
            return inner.attr not in _VALUES | _PARAMS
        return isinstance(inner, ast.Name) and inner.id in self.roots
