"""`.source`: the operations inside a module's forward, readable and editable.

Mental model: `module.source` rewrites the module's `forward` once, so that
every call it makes (`self.c_attn(x)`, `x.split(...)`, `attention_interface(...)`)
goes through a probe named after the call site (`self_c_attn_0`, `split_1`, ...),
and every assignment's value through one named after its target (`h = ...`: `h_0`).
In a trace the routing wrapper runs that copy instead of the original, and each
probe is a location like a module's (`"<module path>.source.<name>.output.<call>"`),
read and replaced through the same mediator `get` / `set`.

- `rewrite`: parsing, naming and recompiling a function (globals, closures and
  decorators kept).
- `listing`: printing a rewritten function with its operation names.
- `probe`: the model side (sourced modules, the per-operation probe).
- `operation`: the body side (`SourceView`, `OperationEnvoy`).
"""

from __future__ import annotations

from .operation import OperationEnvoy, SourceNotAvailable, SourceView, source_view
from .probe import source_forward, sourced_modules

__all__ = [
    "OperationEnvoy",
    "SourceNotAvailable",
    "SourceView",
    "source_forward",
    "source_view",
    "sourced_modules",
]
