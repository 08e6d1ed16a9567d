"""The rewrites that give a trace body its meaning, applied when it is compiled.

- `x.save()` (no arguments) -> `__nnsight_save__(x)`: any value can be saved,
  without attaching a `save` method to `object`.
- `x.grad` -> `__nnsight_grad__(x)` and `x.grad = v` -> `__nnsight_set_grad__(x, v)`:
  inside `with loss.backward():` a tensor's gradient is read where backward
  reaches it; elsewhere it is torch's `.grad`, with a clear error when that is None.
- `x.source` -> `__nnsight_source__(x)`: a clear error when `x` is a tensor (a
  weight, an activation) rather than a module or an operation.
- `with loss.backward(...):` -> `with __nnsight_backward__(loss, ...):`: the
  block's body runs alongside the backward pass (a plain `loss.backward()`
  statement is left alone and runs backward at once).

Everything else is the user's own code, unchanged.
"""

from __future__ import annotations

import ast

SAVE = "__nnsight_save__"
GRAD = "__nnsight_grad__"
SET_GRAD = "__nnsight_set_grad__"
BACKWARD = "__nnsight_backward__"
SOURCE = "__nnsight_source__"
STEPS = "__nnsight_steps__"  # marks a stepped body's requests to the engine (`stepped`)


def _call(name: str, args: list[ast.expr], keywords: list[ast.keyword], like: ast.AST) -> ast.Call:
    return ast.copy_location(ast.Call(ast.Name(name, ast.Load()), args, keywords), like)


class BodyRewriter(ast.NodeTransformer):
    """Applies the rewrites above to one body's statements (in place)."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "save":
            if not node.args and not node.keywords:
                return _call(SAVE, [func.value], [], node)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if node.attr == "grad" and isinstance(node.ctx, ast.Load):
            return _call(GRAD, [node.value], [], node)
        if node.attr == "source" and isinstance(node.ctx, ast.Load):
            return _call(SOURCE, [node.value], [], node)
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        target = node.targets[0]
        if len(node.targets) == 1 and isinstance(target, ast.Attribute) and target.attr == "grad":
            value = self.visit(node.value)
            call = _call(SET_GRAD, [self.visit(target.value), value], [], node)
            return ast.copy_location(ast.Expr(call), node)
        self.generic_visit(node)
        return node

    def visit_With(self, node: ast.With) -> ast.AST:
        for item in node.items:
            expr = item.context_expr
            if (
                isinstance(expr, ast.Call)
                and isinstance(expr.func, ast.Attribute)
                and expr.func.attr == "backward"
            ):
                tensor = self.visit(expr.func.value)
                args = [self.visit(a) for a in expr.args]
                keywords = [self.visit(k) for k in expr.keywords]
                item.context_expr = _call(BACKWARD, [tensor, *args], keywords, expr)
        node.body = [self.visit(s) for s in node.body]
        return node
