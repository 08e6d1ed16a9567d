"""Printing a rewritten function: its source with each operation's name beside its line.

One row per source line; the first operation on a line is shown on the line's
own row, the others on continuation rows (`+ ...`) under it, in execution
order. Lines are numbered from the `def` line (0); decorator lines show `*`::

                         * @torch.no_grad()
                         0 def forward(self, x):
     self_fc_0        ->  1     h = self.fc(x).relu()
     relu_0           ->  +     ...
                          2     return h
"""

from __future__ import annotations

from .rewrite import Compiled


def listing(compiled: Compiled) -> str:
    """The listing of `compiled` (see the module docstring for the layout)."""
    width = max((len(name) for name in compiled.names), default=0)
    on_row: dict[int, list[str]] = {}
    for name in compiled.names:
        on_row.setdefault(compiled.rows[name], []).append(name)
    last = len(compiled.lines) - 1 - compiled.def_row
    digits = max(2, len(str(last)))
    blank = " " * (width + 5)  # where " <name> -> " would be
    rows = []
    for row, line in enumerate(compiled.lines):
        number = "*" if row < compiled.def_row else str(row - compiled.def_row)
        names = on_row.get(row)
        if not names:
            rows.append(f"{blank}{number:>{digits}} {line}")
            continue
        rows.append(f" {names[0]:<{width}} -> {number:>{digits}} {line}")
        indent = line[: len(line) - len(line.lstrip())]
        rows.extend(f" {name:<{width}} -> {'+':>{digits}} {indent}..." for name in names[1:])
    return "\n".join(row.rstrip() for row in rows)


def excerpt(compiled: Compiled, name: str) -> str:
    """The source line of operation `name`, stripped (for error messages and reprs)."""
    return compiled.lines[compiled.rows[name]].strip()
