"""What a `%%trace` cell saved, as a compact table (HTML in a notebook, text elsewhere)."""

from __future__ import annotations

import html
from typing import Any

from .serialization import first_tensor, summary

COLUMNS = ("name", "type", "shape", "dtype", "device", "mean", "std", "min", "max")


class SavedSummary:
    """One row per saved value: its type and, for tensors, shape and statistics.

    Args:
        saved: the saved values by name.
    """

    def __init__(self, saved: dict[str, Any]) -> None:
        self.rows = [describe(name, value) for name, value in saved.items()]

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(row[c])}</td>" for c in COLUMNS) + "</tr>"
            for row in self.rows
        )
        return (
            '<table class="nnsight-saved-summary" style="font-family: var(--jp-code-font-family,'
            f' monospace); font-size: 12px"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>"
        )

    def __repr__(self) -> str:
        widths = {c: max(len(c), *(len(row[c]) for row in self.rows)) for c in COLUMNS}
        lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
        lines += ["  ".join(row[c].ljust(widths[c]) for c in COLUMNS) for row in self.rows]
        return "\n".join(line.rstrip() for line in lines)


def describe(name: str, value: Any) -> dict[str, str]:
    """The table row of one saved value."""
    row = dict.fromkeys(COLUMNS, "")
    row["name"], row["type"] = name, type(value).__name__
    tensor = first_tensor(value) if isinstance(value, (tuple, list)) else value
    if isinstance(value, (list, tuple, dict)):
        row["shape"] = f"len {len(value)}"
    info = summary(tensor) if tensor is not None else None
    if info is None:
        if not row["shape"]:
            text = repr(value)
            row["shape"] = text if len(text) <= 40 else text[:37] + "..."
        return row
    row["dtype"], row["device"] = info["dtype"], info["device"]
    if tensor is not value:
        return row  # a container: its first tensor's dtype and device, no statistics
    row["shape"] = str(tuple(info["shape"]))
    for key in ("mean", "std", "min", "max"):
        if key in info:
            row[key] = f"{info[key]:.4g}"
    return row
