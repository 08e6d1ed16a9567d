"""Printing a rewritten function: its source with each operation's name beside its line.

One row per source line; the first operation on a line is shown on the line's
own row, the others on continuation rows (`+ ...`) under it, in execution
order. Lines are numbered from the `def` line (0); decorator lines show `*` (the
layout of the seed walkthrough's listing)::

                      * @torch.no_grad()
                      0 def forward(self, x):
     self_fc_0   ->  1     h = self.fc(x).relu()
     relu_0      ->  +     ...
     h_0         ->  +     ...
                     2     return h

One operation in context (`window`) marks its line with `-->` and `<--`.
"""

from __future__ import annotations

from .rewrite import Compiled

_CONTEXT = 5  # lines shown above an operation in `window` (and twice that below)


def line_number(compiled: Compiled, row: int) -> str:
    """The number shown for `row` of `compiled.lines`: `*` above the `def` line, then 0, 1, ..."""
    return "*" if row < compiled.def_row else str(row - compiled.def_row)


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
    end = len(compiled.lines)
    while end > compiled.def_row + 1 and not compiled.lines[end - 1].strip():
        end -= 1  # the source's trailing newline
    for row, line in enumerate(compiled.lines[:end]):
        number = line_number(compiled, row)
        names = on_row.get(row)
        if not names:
            rows.append(f"{blank}{number:>{digits}} {line}")
            continue
        rows.append(f" {names[0]:<{width}} -> {number:>{digits}} {line}")
        indent = line[: len(line) - len(line.lstrip())]
        rows.extend(f" {name:<{width}} -> {'+':>{digits}} {indent}..." for name in names[1:])
    return "\n".join(row.rstrip() for row in rows)


def window(compiled: Compiled, name: str) -> str:
    """The lines around operation `name`, its own marked `--> line <--` (`....`: cut)."""
    row, lines = compiled.rows[name], compiled.lines
    start = max(compiled.def_row, row - _CONTEXT)
    stop = min(len(lines), row + 2 * _CONTEXT)
    while stop > row + 1 and not lines[stop - 1].strip():
        stop -= 1  # the source's trailing newline
    shown = ["    ...."] if start > compiled.def_row else []
    for i in range(start, stop):
        line = lines[i]
        if i == row:
            indent = len(line) - len(line.lstrip())
            shown.append(f"    {' ' * max(0, indent - 4)}--> {line.strip()} <--")
        else:
            shown.append(f"    {line}".rstrip())
    if stop < len(lines) and any(line.strip() for line in lines[stop:]):
        shown.append("    ....")
    return "\n".join(shown)


def excerpt(compiled: Compiled, name: str) -> str:
    """The source line of operation `name`, stripped (for error messages and reprs)."""
    return compiled.lines[compiled.rows[name]].strip()
