"""Which of a body's variables hold saved values, beyond plain identity.

`save` records a value's `id`, and a variable holding that object is the caller's
after the block. Two refinements make that exact: CPython shares equal small ints,
`True`, `None`, short strings and constants between unrelated names, so such a value
leaves only under a name the body's source saves (`saved_names`); and a list, tuple
or dict built of saved values leaves with them (`holds_saved`).
"""

from __future__ import annotations

import ast
import functools
from typing import Any

_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes)
MAY_BE_SHARED = frozenset({*_IMMUTABLE, tuple, frozenset})  # the types `shared` may be True of


def shared(value: Any) -> bool:
    """Whether CPython may give this same object to unrelated names (cached small ints,
    singletons, interned strings, a code object's constants)."""
    if type(value) in _IMMUTABLE:
        return True
    if type(value) in (tuple, frozenset):
        return all(shared(item) for item in value)
    return False


def holds_saved(
    value: Any, ids: set[int], seen: set[int] | None = None, depth: int = 0
) -> bool | None:
    """For a list, tuple or dict: True when it holds a saved value and otherwise only
    saved values and plain constants (so nothing unsaved leaves with it), False when it
    holds anything else, None when it holds neither (or `value` is no container)."""
    if not isinstance(value, (list, tuple, dict)) or depth > 8:
        return None
    seen = set() if seen is None else seen
    seen.add(id(value))
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    found: bool | None = None
    for item in items:
        if id(item) in ids and not shared(item):
            found = True
            continue
        if id(item) in seen:  # met before (or a cycle): judged there
            continue
        inner = holds_saved(item, ids, seen, depth + 1)
        if inner is False or (inner is None and not shared(item)):
            return False
        found = found or inner
    return found


@functools.lru_cache(maxsize=256)
def saved_names(source: str) -> frozenset[str] | None:
    """Names that `source` saves: bound from an expression with a `save` call
    (`x = model.layer.output.save()`, `n = nnsight.save(5)`), or saved by name
    (`nnsight.save(n)`, `n.save()`). None when the source does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
            if node.value is not None and any(_is_save(n) for n in ast.walk(node.value)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Call) and _is_save(node):
            if node.args and isinstance(node.args[0], ast.Name):
                names.add(node.args[0].id)
            func = node.func
            if (
                not node.args
                and isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
            ):
                names.add(func.value.id)
    return frozenset(names)


def _is_save(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "save") or (
        isinstance(func, ast.Attribute) and func.attr == "save"
    )
